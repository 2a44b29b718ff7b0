package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// The object sha256 log (sha256.log) is the sha256 index read backwards:
// for each object the index links, the plain sha256 of its content, by the
// object's fs-verity digest. An export names every file of a zstd:chunked
// layer by its sha256 (the TOC digest); it reads them here, one small file,
// instead of hashing each file's content a second time (walking the
// index's links to read them cost more than the hashing).
//
// Both digests are of the same bytes: a record is written only where the
// index gets its link, by the code that hashed the content it stored (see
// IndexAdd), so a record cannot go stale: an object with that fs-verity
// digest has that content. The log is a cache: a record lost (a crash
// before the batch reached the disk, a store older than the log) only
// means the export hashes that file; a damaged record fails its checksum
// and is passed over; a digest with two different records is trusted for
// neither. Verify checks every record against the sha256 it computes of
// each object, and a rebuild writes the log anew; gc rewrites it with the
// records of the objects that stay, so it does not grow with objects gone.
//
// Layout: an 8-byte header, then 72-byte records (fs-verity digest,
// sha256, CRC-64/ECMA of those 64 bytes), appended whole by one O_APPEND
// write per batch, so that writers never interleave within a record.
//
// Version 1 logs checked their records with XXH3-64 (zeebo/xxh3): that
// library's CPU probes at start cost every mossfs process 0.27 ms, and
// mossfs links this package (see package stoneapi). A version 1 log reads
// as empty (the exports hash those files), the first append of a process
// replaces it with an empty log of this version, and gc and verify's
// rebuild rewrite it (verify's rebuild with every object's record).

// SHALogFile is the log's name under the state root.
const SHALogFile = "sha256.log"

var (
	shaLogHeader   = [8]byte{'m', 'o', 's', 's', 'v', 's', '2', '\n'}
	shaLogHeaderV1 = [8]byte{'m', 'o', 's', 's', 'v', 's', '1', '\n'}
)

// errSHALogV1 is parseSHALog's error for a version 1 log.
var errSHALogV1 = errors.New("a version 1 log (XXH3-64 checksums), which this version does not read: moss-compose verify rebuilds it")

// shaLogSum is a record's checksum. The table is looked up at each call,
// not kept in a variable set at start: crc64 builds its tables on first
// use, and every process of mossfs would pay for them at start.
func shaLogSum(rec []byte) uint64 { return crc64.Checksum(rec, crc64.MakeTable(crc64.ECMA)) }

const shaLogRecord = 32 + 32 + 8

// shaLogFlush is the batch a writer keeps before appending it.
const shaLogFlush = 64 << 10

// shaLog is a process's pending records.
type shaLog struct {
	mu  sync.Mutex
	buf []byte
	// checked: the log's header was found to be this version's (or the
	// log replaced) before this process first appended to it.
	checked bool
}

func (s *State) shaLogPath() string { return filepath.Join(s.root, SHALogFile) }

func shaLogAppend(b []byte, verity, sha [32]byte) []byte {
	n := len(b)
	b = append(b, verity[:]...)
	b = append(b, sha[:]...)
	return binary.BigEndian.AppendUint64(b, shaLogSum(b[n:]))
}

// recordSHA queues a record (written at the next flush: a full batch or
// Sync).
func (s *State) recordSHA(verity, sha [32]byte) error {
	l := &s.shaLog
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = shaLogAppend(l.buf, verity, sha)
	if len(l.buf) < shaLogFlush {
		return nil
	}
	return s.flushSHALogLocked()
}

// flushSHALog appends the pending records to the log.
func (s *State) flushSHALog() error {
	s.shaLog.mu.Lock()
	defer s.shaLog.mu.Unlock()
	return s.flushSHALogLocked()
}

func (s *State) flushSHALogLocked() error {
	l := &s.shaLog
	if len(l.buf) == 0 {
		return nil
	}
	path := s.shaLogPath()
	if !l.checked {
		if err := s.replaceOldSHALog(); err != nil {
			return fmt.Errorf("object sha256 log %s: %w", path, err)
		}
		l.checked = true
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err = s.createSHALog(); err == nil {
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		}
	}
	if err != nil {
		return fmt.Errorf("object sha256 log: %w", err)
	}
	_, err = f.Write(l.buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("object sha256 log %s: %w", path, err)
	}
	l.buf = l.buf[:0]
	return nil
}

// replaceOldSHALog replaces a log of an earlier version (another header)
// with an empty one of this version, so that records are never appended
// under a header that says another format. (Records another process
// appends to the old log meanwhile are lost: it is a cache.)
func (s *State) replaceOldSHALog() error {
	f, err := os.Open(s.shaLogPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var hdr [len(shaLogHeader)]byte
	_, err = io.ReadFull(f, hdr[:])
	f.Close()
	if err == nil && hdr == shaLogHeader {
		return nil
	}
	return writeFileAtomic(s.shaLogPath(), shaLogHeader[:], 0o600, false)
}

// createSHALog puts an empty log (its header) in place unless one is
// there: written under a temporary name and linked, so that no writer
// ever appends to a log without its header.
func (s *State) createSHALog() error {
	f, err := os.CreateTemp(s.root, ".sha256.log-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(shaLogHeader[:])
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(f.Name(), s.shaLogPath()); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// ObjectSHA256s reads the object sha256 log: the sha256 of the content of
// each object it has a record for, by fs-verity digest. A store without a
// log gives an empty map. Records that fail their checksum are passed
// over (the reader finds the next whole record after them), and a digest
// with two different records is left out.
func (s *State) ObjectSHA256s() (map[[32]byte][32]byte, error) {
	data, err := os.ReadFile(s.shaLogPath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[[32]byte][32]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("object sha256 log: %w", err)
	}
	m, _, err := parseSHALog(data, s.shaLogPath())
	if errors.Is(err, errSHALogV1) {
		return map[[32]byte][32]byte{}, nil
	}
	return m, err
}

// parseSHALog returns the records of a log and the number of digests with
// conflicting records (left out).
func parseSHALog(data []byte, path string) (map[[32]byte][32]byte, int, error) {
	if len(data) >= len(shaLogHeaderV1) && bytes.Equal(data[:len(shaLogHeaderV1)], shaLogHeaderV1[:]) {
		return map[[32]byte][32]byte{}, 0, fmt.Errorf("object sha256 log %s: %w", path, errSHALogV1)
	}
	if len(data) < len(shaLogHeader) || !bytes.Equal(data[:len(shaLogHeader)], shaLogHeader[:]) {
		return nil, 0, fmt.Errorf("object sha256 log %s: not an object sha256 log (bad header)", path)
	}
	m := make(map[[32]byte][32]byte, (len(data)-len(shaLogHeader))/shaLogRecord)
	var conflict map[[32]byte]bool
	for off := len(shaLogHeader); off+shaLogRecord <= len(data); {
		r := data[off : off+shaLogRecord]
		if shaLogSum(r[:64]) != binary.BigEndian.Uint64(r[64:]) {
			off++ // damaged (a write a crash tore): look for the next record
			continue
		}
		off += shaLogRecord
		v, sha := [32]byte(r[:32]), [32]byte(r[32:64])
		if conflict[v] {
			continue
		}
		if have, ok := m[v]; ok && have != sha {
			if conflict == nil {
				conflict = map[[32]byte]bool{}
			}
			conflict[v] = true
			delete(m, v)
			continue
		}
		m[v] = sha
	}
	return m, len(conflict), nil
}

// writeSHALog replaces the log with one record per object (verify's
// rebuild, which hashed every object).
func (s *State) writeSHALog(objs, shas [][32]byte) error {
	b := make([]byte, 0, len(shaLogHeader)+len(objs)*shaLogRecord)
	b = append(b, shaLogHeader[:]...)
	for i := range objs {
		b = shaLogAppend(b, objs[i], shas[i])
	}
	s.shaLog.mu.Lock()
	defer s.shaLog.mu.Unlock()
	if err := writeFileAtomic(s.shaLogPath(), b, 0o600, false); err != nil {
		return fmt.Errorf("object sha256 log: %w", err)
	}
	s.shaLog.buf = s.shaLog.buf[:0] // records of objects the new log has
	return nil
}

// compactSHALog rewrites the log with the records of the objects keep
// keeps (gc, under the exclusive lock: no writer appends meanwhile). A log
// that cannot be read is replaced by an empty one.
func (s *State) compactSHALog(keep func(d [32]byte) bool) error {
	if err := s.flushSHALog(); err != nil {
		return err
	}
	recs, err := s.ObjectSHA256s()
	if err != nil {
		recs = nil
	} else if len(recs) == 0 {
		return nil
	}
	var objs, shas [][32]byte
	for d, sha := range recs {
		if keep(d) {
			objs, shas = append(objs, d), append(shas, sha)
		}
	}
	return s.writeSHALog(objs, shas)
}
