package stone

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// MetaTag says what a Meta record describes.
type MetaTag uint16

// Meta tags.
const (
	TagName          MetaTag = 1
	TagArchitecture  MetaTag = 2
	TagVersion       MetaTag = 3
	TagSummary       MetaTag = 4
	TagDescription   MetaTag = 5
	TagHomepage      MetaTag = 6
	TagSourceID      MetaTag = 7
	TagDepends       MetaTag = 8
	TagProvides      MetaTag = 9
	TagConflicts     MetaTag = 10
	TagRelease       MetaTag = 11
	TagLicense       MetaTag = 12
	TagBuildRelease  MetaTag = 13
	TagPackageURI    MetaTag = 14
	TagPackageHash   MetaTag = 15
	TagPackageSize   MetaTag = 16
	TagBuildDepends  MetaTag = 17
	TagSourceURI     MetaTag = 18
	TagSourcePath    MetaTag = 19
	TagSourceRef     MetaTag = 20
	lastKnownMetaTag         = TagSourceRef
)

var metaTagNames = [...]string{"", "Name", "Architecture", "Version", "Summary", "Description",
	"Homepage", "SourceID", "Depends", "Provides", "Conflicts", "Release", "License",
	"BuildRelease", "PackageURI", "PackageHash", "PackageSize", "BuildDepends", "SourceURI",
	"SourcePath", "SourceRef"}

func (t MetaTag) String() string {
	if t >= 1 && t <= lastKnownMetaTag {
		return metaTagNames[t]
	}
	return fmt.Sprintf("Unknown(%d)", uint16(t))
}

// MetaKind is the type of a Meta record's value.
type MetaKind uint8

// Meta value kinds.
const (
	MetaInt8       MetaKind = 1
	MetaUint8      MetaKind = 2
	MetaInt16      MetaKind = 3
	MetaUint16     MetaKind = 4
	MetaInt32      MetaKind = 5
	MetaUint32     MetaKind = 6
	MetaInt64      MetaKind = 7
	MetaUint64     MetaKind = 8
	MetaString     MetaKind = 9
	MetaDependency MetaKind = 10
	MetaProvider   MetaKind = 11
)

var metaKindNames = [...]string{"", "Int8", "Uint8", "Int16", "Uint16", "Int32", "Uint32",
	"Int64", "Uint64", "String", "Dependency", "Provider"}

func (k MetaKind) String() string {
	if k >= 1 && k <= MetaProvider {
		return metaKindNames[k]
	}
	return fmt.Sprintf("Unknown(%d)", uint8(k))
}

// width is the size of a numeric kind's value, 0 for other kinds.
func (k MetaKind) width() int {
	switch k {
	case MetaInt8, MetaUint8:
		return 1
	case MetaInt16, MetaUint16:
		return 2
	case MetaInt32, MetaUint32:
		return 4
	case MetaInt64, MetaUint64:
		return 8
	}
	return 0
}

func (k MetaKind) signed() bool {
	return k == MetaInt8 || k == MetaInt16 || k == MetaInt32 || k == MetaInt64
}

// DepKind is the namespace of a dependency or provider.
type DepKind uint8

// Dependency kinds.
const (
	DepPackageName   DepKind = 0
	DepSharedLibrary DepKind = 1
	DepPkgConfig     DepKind = 2
	DepInterpreter   DepKind = 3
	DepCMake         DepKind = 4
	DepPython        DepKind = 5
	DepBinary        DepKind = 6
	DepSystemBinary  DepKind = 7
	DepPkgConfig32   DepKind = 8
)

// depKindText is the prefix of each kind's text form, as moss prints it.
var depKindText = [...]string{"name", "soname", "pkgconfig", "interpreter", "cmake", "python",
	"binary", "sysbinary", "pkgconfig32"}

func (k DepKind) String() string {
	if int(k) < len(depKindText) {
		return depKindText[k]
	}
	return fmt.Sprintf("unknown%d", uint8(k))
}

// Dependency is a Depends/BuildDepends (kind Dependency) or a
// Provides/Conflicts (kind Provider) value.
type Dependency struct {
	Kind DepKind
	Name string
}

// String is the text form: "name(bash)", "soname(libc.so.6(x86_64))".
func (d Dependency) String() string { return d.Kind.String() + "(" + d.Name + ")" }

// MetaRecord is one record of a Meta payload, as stored.
type MetaRecord struct {
	Tag    MetaTag
	Kind   MetaKind
	Length uint32
	Int    int64      // signed numeric kinds
	Uint   uint64     // unsigned numeric kinds
	String string     // MetaString, NULs trimmed
	Dep    Dependency // MetaDependency and MetaProvider
	Raw    []byte     // unknown kinds
}

// Value returns the record's value as a Go value (int64, uint64, string,
// Dependency or []byte).
func (r *MetaRecord) Value() any {
	switch {
	case r.Kind.width() > 0 && r.Kind.signed():
		return r.Int
	case r.Kind.width() > 0:
		return r.Uint
	case r.Kind == MetaString:
		return r.String
	case r.Kind == MetaDependency || r.Kind == MetaProvider:
		return r.Dep
	}
	return r.Raw
}

// Meta is the decoded metadata of one package.
type Meta struct {
	Name, Version, Architecture, Summary, Description, Homepage, SourceID string
	Release, BuildRelease                                                 uint64
	Licenses                                                              []string
	Depends, Provides, Conflicts, BuildDepends                            []Dependency
	PackageURI, PackageHash                                               string
	PackageSize                                                           uint64
	SourceURI, SourcePath, SourceRef                                      string
	// Records are all records in file order, including unknown ones.
	Records []MetaRecord
}

// ID is {name}-{version}-{release}.{arch}.
func (m *Meta) ID() string {
	return fmt.Sprintf("%s-%s-%d.%s", m.Name, m.Version, m.Release, m.Architecture)
}

// FileName is the name moss gives the package's file:
// {name}-{version}-{release}-{build_release}-{arch}.stone.
func (m *Meta) FileName() string {
	return fmt.Sprintf("%s-%s-%d-%d-%s.stone", m.Name, m.Version, m.Release, m.BuildRelease, m.Architecture)
}

// AllProvides is Provides plus the implicit name(<Name>).
func (m *Meta) AllProvides() []Dependency {
	out := []Dependency{{Kind: DepPackageName, Name: m.Name}}
	for _, d := range m.Provides {
		if d != out[0] {
			out = append(out, d)
		}
	}
	return out
}

// Validate checks what a binary package needs: the required fields, and
// name, version and architecture usable in ids and file names.
func (m *Meta) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"Name", m.Name}, {"Version", m.Version}, {"Architecture", m.Architecture},
	} {
		if f.v == "" {
			return fmt.Errorf("missing %s", f.name)
		}
		if strings.ContainsAny(f.v, "/\\ \t\n\r") || f.v == "." || f.v == ".." {
			return fmt.Errorf("%s %q contains a path separator or white space", f.name, f.v)
		}
	}
	return nil
}

func (p *Package) parseMeta(h *PayloadHeader, b []byte) (*Meta, error) {
	m := &Meta{}
	// Each record takes at least 8 bytes, so the count is bounded by len(b).
	if uint64(h.NumRecords) > uint64(len(b))/8 {
		return nil, p.errorf(h.Offset, "Meta payload: %d records cannot fit in %d bytes", h.NumRecords, len(b))
	}
	m.Records = make([]MetaRecord, 0, h.NumRecords)
	for i := uint32(0); i < h.NumRecords; i++ {
		if len(b) < 8 {
			return nil, p.errorf(h.Offset, "Meta record %d: truncated", i)
		}
		r := MetaRecord{
			Length: binary.BigEndian.Uint32(b),
			Tag:    MetaTag(binary.BigEndian.Uint16(b[4:])),
			Kind:   MetaKind(b[6]),
		}
		b = b[8:]
		if uint64(r.Length) > uint64(len(b)) {
			return nil, p.errorf(h.Offset, "Meta record %d (%s): value of %d bytes, %d remain", i, r.Tag, r.Length, len(b))
		}
		v := b[:r.Length:r.Length]
		b = b[r.Length:]
		what := fmt.Sprintf("Meta record %d (%s)", i, r.Tag)
		switch w := r.Kind.width(); {
		case w > 0:
			if int(r.Length) != w {
				return nil, p.errorf(h.Offset, "%s: %s value of %d bytes", what, r.Kind, r.Length)
			}
			var u uint64
			for _, c := range v {
				u = u<<8 | uint64(c)
			}
			if r.Kind.signed() {
				shift := 64 - 8*w
				r.Int = int64(u<<shift) >> shift
			} else {
				r.Uint = u
			}
		case r.Kind == MetaString:
			r.String = cstring(v)
			if err := p.checkString(h, what, r.String); err != nil {
				return nil, err
			}
		case r.Kind == MetaDependency || r.Kind == MetaProvider:
			if len(v) < 1 {
				return nil, p.errorf(h.Offset, "%s: empty %s", what, r.Kind)
			}
			r.Dep = Dependency{Kind: DepKind(v[0]), Name: cstring(v[1:])}
			if err := p.checkString(h, what, r.Dep.Name); err != nil {
				return nil, err
			}
		default:
			r.Raw = v
		}
		if err := m.set(&r); err != nil {
			return nil, p.errorf(h.Offset, "%s: %v", what, err)
		}
		m.Records = append(m.Records, r)
	}
	if len(b) != 0 {
		return nil, p.errorf(h.Offset, "Meta payload: %d bytes after %d records", len(b), h.NumRecords)
	}
	return m, nil
}

// set stores a record in its typed field. Records of unknown tags or of
// unknown kinds are kept only in Records; a known tag with a value of
// another known type is an error.
func (m *Meta) set(r *MetaRecord) error {
	str := func(dst *string) error {
		if r.Kind != MetaString {
			return fmt.Errorf("%s value where a String is expected", r.Kind)
		}
		*dst = r.String
		return nil
	}
	num := func(dst *uint64) error {
		switch {
		case r.Kind.width() == 0:
			return fmt.Errorf("%s value where an integer is expected", r.Kind)
		case r.Kind.signed() && r.Int < 0:
			return fmt.Errorf("negative value %d", r.Int)
		case r.Kind.signed():
			*dst = uint64(r.Int)
		default:
			*dst = r.Uint
		}
		return nil
	}
	dep := func(dst *[]Dependency) error {
		if r.Kind != MetaDependency && r.Kind != MetaProvider {
			return fmt.Errorf("%s value where a Dependency or Provider is expected", r.Kind)
		}
		*dst = append(*dst, r.Dep)
		return nil
	}
	if r.Kind == 0 || r.Kind > MetaProvider {
		// A kind a later format added: kept in Records, as moss keeps it,
		// rather than refusing the package. The typed field stays unset.
		return nil
	}
	switch r.Tag {
	case TagName:
		return str(&m.Name)
	case TagArchitecture:
		return str(&m.Architecture)
	case TagVersion:
		return str(&m.Version)
	case TagSummary:
		return str(&m.Summary)
	case TagDescription:
		return str(&m.Description)
	case TagHomepage:
		return str(&m.Homepage)
	case TagSourceID:
		return str(&m.SourceID)
	case TagDepends:
		return dep(&m.Depends)
	case TagProvides:
		return dep(&m.Provides)
	case TagConflicts:
		return dep(&m.Conflicts)
	case TagRelease:
		return num(&m.Release)
	case TagLicense:
		var s string
		if err := str(&s); err != nil {
			return err
		}
		m.Licenses = append(m.Licenses, s)
	case TagBuildRelease:
		return num(&m.BuildRelease)
	case TagPackageURI:
		return str(&m.PackageURI)
	case TagPackageHash:
		return str(&m.PackageHash)
	case TagPackageSize:
		return num(&m.PackageSize)
	case TagBuildDepends:
		return dep(&m.BuildDepends)
	case TagSourceURI:
		return str(&m.SourceURI)
	case TagSourcePath:
		return str(&m.SourcePath)
	case TagSourceRef:
		return str(&m.SourceRef)
	}
	return nil
}
