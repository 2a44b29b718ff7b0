package fusefs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	lookPath    = exec.LookPath
	execCommand = exec.Command
)

// controlName is the abstract unix socket of the daemon serving the mount
// whose root has device number dev.
func controlName(dev uint64) string {
	return fmt.Sprintf("@mossfs-fuse/%d:%d", unix.Major(dev), unix.Minor(dev))
}

type request struct {
	Op      string `json:"op"` // "switch" or "status"
	Image   string `json:"image,omitempty"`
	Objects string `json:"objects,omitempty"`
}

// Status is what a running daemon reports about its mount.
type Status struct {
	Target      string `json:"target"`
	Image       string `json:"image"`
	Objects     string `json:"objects"`
	Pid         int    `json:"pid"`
	Generation  uint64 `json:"generation"`
	Passthrough bool   `json:"passthrough"`
	Verify      bool   `json:"verify"`
	Rootless    bool   `json:"rootless"`
}

type response struct {
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// controlTakeover is how long a daemon waits for the control socket name
// of its device number to be let go by the daemon of an unmounted file
// system that had the same number (a variable for tests).
var controlTakeover = 10 * time.Second

type controlServer struct {
	l    *net.UnixListener
	once sync.Once
}

// listenControl starts answering requests for s. Only root and the user
// running the daemon may talk to it.
//
// The name comes from the mount's device number, which the kernel hands
// out again as soon as a file system is gone: the daemon that served the
// last mount with this number may not yet have seen its connection end and
// closed its socket (a loaded machine, or a request still being answered).
// Only such a daemon can hold the name (a live mount keeps its number), so
// a name in use is tried again until it lets go, for up to controlTakeover.
func listenControl(s *Server) (*controlServer, error) {
	addr := &net.UnixAddr{Name: controlName(s.dev), Net: "unix"}
	l, err := net.ListenUnix("unix", addr)
	for deadline := time.Now().Add(controlTakeover); errors.Is(err, syscall.EADDRINUSE) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		l, err = net.ListenUnix("unix", addr)
	}
	if err != nil {
		return nil, err
	}
	c := &controlServer{l: l}
	go func() {
		for {
			conn, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go c.handle(s, conn)
		}
	}()
	return c, nil
}

func (c *controlServer) close() { c.once.Do(func() { c.l.Close() }) }

func (c *controlServer) handle(s *Server, conn *net.UnixConn) {
	defer conn.Close()
	reply := func(r response) { _ = json.NewEncoder(conn).Encode(r) }
	if err := checkPeer(conn); err != nil {
		reply(response{Error: err.Error()})
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req request
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
		reply(response{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Op {
	case "status":
		reply(response{Status: s.status()})
	case "switch":
		if err := s.Switch(req.Image, req.Objects); err != nil {
			reply(response{Error: err.Error()})
			return
		}
		reply(response{Status: s.status()})
	default:
		reply(response{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

func checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not control this mount", cred.Uid)
	}
	return nil
}

func (s *Server) status() *Status {
	g := s.fs.current()
	return &Status{
		Target: s.target, Image: g.image, Objects: g.objects, Pid: os.Getpid(),
		Generation: g.id, Passthrough: s.fs.passthrough.Load(),
		Verify: !s.fs.opts.NoVerify, Rootless: s.rootless,
	}
}

// ErrNoDaemon is returned when no mossfs FUSE daemon serves the mount point.
var ErrNoDaemon = errors.New("no mossfs FUSE daemon serves this mount point")

func call(target string, req request) (*Status, error) {
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", target, err)
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: controlName(st.Dev), Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%v)", target, ErrNoDaemon, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("%s: talking to the FUSE daemon: %w", target, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return nil, fmt.Errorf("%s: reading the FUSE daemon's answer: %w", target, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("%s: FUSE daemon: %s", target, resp.Error)
	}
	return resp.Status, nil
}

// RequestSwitch asks the daemon serving the FUSE mount at target to serve
// image (objects: its object directory, "" to keep the current one) instead,
// inside the running mount; see the package documentation for what readers
// see meanwhile. This is the rootless switch.
func RequestSwitch(target, image, objects string) (*Status, error) {
	return call(target, request{Op: "switch", Image: image, Objects: objects})
}

// Query returns the status of the daemon serving the FUSE mount at target.
func Query(target string) (*Status, error) {
	return call(target, request{Op: "status"})
}
