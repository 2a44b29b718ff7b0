package fusefs

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A new mount can get the device number of one just unmounted while the
// daemon that served the old one still holds the control socket named
// after it (it has not yet seen its connection end: a loaded machine, or a
// request still being answered). The new daemon takes the name once the
// old one lets go, and answers on it; a name held for longer than
// controlTakeover is given up with EADDRINUSE rather than waited for.
func TestControlNameLetGoByOldDaemon(t *testing.T) {
	// A device number no real mount has: the old daemon's socket is a plain
	// listener on the same name.
	s := &Server{dev: unix.Mkdev(4095, 1<<20-2)}
	addr := &net.UnixAddr{Name: controlName(s.dev), Net: "unix"}
	old, err := net.ListenUnix("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	let := make(chan struct{})
	go func() {
		<-let
		old.Close()
	}()
	type result struct {
		c   *controlServer
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := listenControl(s)
		got <- result{c, err}
	}()
	// Held by the old daemon, the name is waited for, not given up at once.
	select {
	case r := <-got:
		if r.c != nil {
			r.c.close()
		}
		close(let)
		t.Fatalf("listenControl returned while the old daemon held the name: %v", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(let)
	r := <-got
	if r.err != nil {
		t.Fatalf("listenControl after the old daemon let go of the name: %v", r.err)
	}
	defer r.c.close()
	// The name answers for the new server now (a request that needs no file
	// system behind it).
	conn, err := net.DialUnix("unix", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if err := json.NewEncoder(conn).Encode(request{Op: "no-such-op"}); err != nil {
		t.Fatal(err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil || !strings.Contains(resp.Error, `unknown request "no-such-op"`) {
		t.Fatalf("answer on the name taken over: %+v %v", resp, err)
	}

	// Held for good: given up after controlTakeover.
	defer func(d time.Duration) { controlTakeover = d }(controlTakeover)
	controlTakeover = 50 * time.Millisecond
	s2 := &Server{dev: unix.Mkdev(4095, 1<<20-3)}
	squat, err := net.ListenUnix("unix", &net.UnixAddr{Name: controlName(s2.dev), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	if c, err := listenControl(s2); !errors.Is(err, syscall.EADDRINUSE) {
		if c != nil {
			c.close()
		}
		t.Fatalf("listenControl on a name never let go: %v, want EADDRINUSE", err)
	}
}
