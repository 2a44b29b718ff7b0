// Package smallfile reads small files (records of a few bytes to a few
// kilobytes: the active transaction, a transaction's metadata, loader.conf)
// with bare system calls: open, read until end of file, close. os.ReadFile
// costs five more per file on Linux (an os.File tries the poller: fcntl
// twice, epoll_ctl, fcntl twice) and an fstat, and a system call costs 3 µs
// or more on the virtual machines mossfs is developed on; mossfs switch
// reads several such files.
package smallfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// Read returns the content of the file at path. Errors are *os.PathError,
// as from os.ReadFile (errors.Is(err, fs.ErrNotExist) works).
func Read(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 2048)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
