package oci

import (
	"archive/tar"
	"bytes"
	"path"
	"slices"
	"strconv"
	"strings"
)

// tarFormatter writes a layer's tar headers, padding and end of archive
// as one archive/tar Writer writes them for the headers entryHeader makes
// (PAX format): the same bytes, without the Writer's reflection-free but
// costly checks, map of PAX records and sorting per entry (in the profile
// of the 65k-entry export, WriteHeader was ~0.3-0.5 cpu-s of the
// producer's). A header outside what it formats itself (a name or link
// target of more than 100 bytes or not ASCII, a number past its octal
// field, owner names, other PAX records, access or change times, any
// other type) goes through archive/tar's own Writer. TestTarFormatter and
// FuzzTarFormatter compare the two.
type tarFormatter struct {
	pad  int64        // padding owed after the content of the last header
	slow bytes.Buffer // archive/tar's output for a header it writes
	keys []string
	data []byte
}

const (
	tarNameSize = 100
	paxXattr    = "SCHILY.xattr."
)

// header writes hdr's header blocks to out, after the padding the
// previous header's content owes. Contents are not written here: a
// regular file's content of hdr.Size bytes is taken to follow.
func (f *tarFormatter) header(out *bytes.Buffer, hdr *tar.Header) error {
	if !f.fast(hdr) {
		f.slow.Reset()
		tw := tar.NewWriter(&f.slow)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f.writePad(out)
		out.Write(f.slow.Bytes())
		f.setPad(hdr)
		return nil
	}
	f.writePad(out)
	// The PAX records: the xattrs, and the mtime when it has nanoseconds
	// (USTAR keeps whole seconds), sorted by key.
	f.keys = f.keys[:0]
	for k := range hdr.PAXRecords {
		f.keys = append(f.keys, k)
	}
	nsec := hdr.ModTime.Nanosecond()
	if len(f.keys) > 0 || nsec != 0 {
		slices.Sort(f.keys)
		d := f.data[:0]
		mtimeDone := nsec == 0
		for _, k := range f.keys {
			if !mtimeDone && k > "mtime" {
				d = appendPAXRecord(d, "mtime", paxTime(hdr.ModTime.Unix(), nsec))
				mtimeDone = true
			}
			d = appendPAXRecord(d, k, hdr.PAXRecords[k])
		}
		if !mtimeDone {
			d = appendPAXRecord(d, "mtime", paxTime(hdr.ModTime.Unix(), nsec))
		}
		f.data = d
		dir, file := path.Split(hdr.Name)
		name := path.Join(dir, "PaxHeaders.0", file)
		if len(name) > tarNameSize {
			name = name[:tarNameSize]
		}
		name = strings.TrimRight(name, "/")
		var blk [blockSize]byte
		copy(blk[:tarNameSize], name)
		blk[156] = tar.TypeXHeader
		putOctal(blk[100:108], 0)
		putOctal(blk[108:116], 0)
		putOctal(blk[116:124], 0)
		putOctal(blk[124:136], int64(len(d)))
		putOctal(blk[136:148], 0)
		finishBlock(&blk)
		out.Write(blk[:])
		out.Write(d)
		out.Write(zeroBlock[:blockPadding(int64(len(d)))])
	}
	var blk [blockSize]byte
	copy(blk[:tarNameSize], hdr.Name)
	putOctal(blk[100:108], hdr.Mode)
	putOctal(blk[108:116], int64(hdr.Uid))
	putOctal(blk[116:124], int64(hdr.Gid))
	putOctal(blk[124:136], hdr.Size)
	putOctal(blk[136:148], hdr.ModTime.Unix())
	blk[156] = hdr.Typeflag
	copy(blk[157:257], hdr.Linkname)
	putOctal(blk[329:337], hdr.Devmajor)
	putOctal(blk[337:345], hdr.Devminor)
	finishBlock(&blk)
	out.Write(blk[:])
	f.setPad(hdr)
	return nil
}

// end writes the last padding and the end of archive (two zero blocks).
func (f *tarFormatter) end(out *bytes.Buffer) {
	f.writePad(out)
	out.Write(zeroBlock[:2*blockSize])
}

func (f *tarFormatter) writePad(out *bytes.Buffer) {
	out.Write(zeroBlock[:f.pad])
	f.pad = 0
}

func (f *tarFormatter) setPad(hdr *tar.Header) {
	if hdr.Typeflag == tar.TypeReg {
		f.pad = blockPadding(hdr.Size)
	}
}

func blockPadding(n int64) int64 { return -n & (blockSize - 1) }

// fast reports whether hdr is one header formats itself: what entryHeader
// makes, with every field fitting its USTAR field.
func (f *tarFormatter) fast(hdr *tar.Header) bool {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if strings.HasSuffix(hdr.Name, "/") {
			return false // archive/tar refuses it
		}
	case tar.TypeLink, tar.TypeSymlink, tar.TypeDir:
	default:
		return false
	}
	const max7, max11 = 1<<21 - 1, 1<<33 - 1 // octal digits of an 8- and a 12-byte field
	sec := hdr.ModTime.Unix()
	if hdr.Format != tar.FormatPAX || !ustarString(hdr.Name) || !ustarString(hdr.Linkname) ||
		hdr.Uname != "" || hdr.Gname != "" || hdr.Xattrs != nil ||
		!hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() || hdr.ModTime.IsZero() ||
		hdr.Mode < 0 || hdr.Mode > max7 || hdr.Uid < 0 || hdr.Uid > max7 || hdr.Gid < 0 || hdr.Gid > max7 ||
		hdr.Size < 0 || hdr.Size > max11 || hdr.Devmajor < 0 || hdr.Devmajor > max7 ||
		hdr.Devminor < 0 || hdr.Devminor > max7 || sec < 0 || sec > max11 {
		return false
	}
	for k := range hdr.PAXRecords {
		rest, ok := strings.CutPrefix(k, paxXattr)
		if !ok || rest == "" || strings.ContainsAny(k, "=\x00") {
			return false
		}
	}
	return true
}

// ustarString: fits a name field as it is (ASCII without NUL, at most
// 100 bytes).
func ustarString(s string) bool {
	if len(s) > tarNameSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// putOctal writes x as archive/tar does into a field it fits: zero-padded
// octal digits and a NUL.
func putOctal(b []byte, x int64) {
	n := len(b) - 1
	for i := n - 1; i >= 0; i-- {
		b[i] = byte('0' + x&7)
		x >>= 3
	}
	b[n] = 0
}

// finishBlock sets the USTAR magic and version and the checksum.
func finishBlock(blk *[blockSize]byte) {
	copy(blk[257:263], "ustar\x00")
	copy(blk[263:265], "00")
	sum := int64(8 * ' ') // the checksum field counts as spaces
	for i, c := range blk {
		if i < 148 || i >= 156 {
			sum += int64(c)
		}
	}
	putOctal(blk[148:155], sum)
	blk[155] = ' '
}

// paxTime is archive/tar's PAX time of a non-negative time: seconds, and
// the nanoseconds without trailing zeros.
func paxTime(sec int64, nsec int) string {
	b := strconv.AppendInt(make([]byte, 0, 32), sec, 10)
	if nsec == 0 {
		return string(b)
	}
	var frac [10]byte
	frac[0] = '.'
	for i, x := 9, nsec; i >= 1; i-- {
		frac[i] = byte('0' + x%10)
		x /= 10
	}
	n := 10
	for frac[n-1] == '0' {
		n--
	}
	return string(append(b, frac[:n]...))
}

// appendPAXRecord appends "<size> k=v\n", size counting itself, as
// archive/tar's formatPAXRecord does.
func appendPAXRecord(b []byte, k, v string) []byte {
	size := len(k) + len(v) + 3
	size += len(strconv.Itoa(size))
	if n := len(strconv.Itoa(size)) + len(k) + len(v) + 3; n != size {
		size = n
	}
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	b = append(b, v...)
	return append(b, '\n')
}
