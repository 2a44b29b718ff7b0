// Command probe is a trigger handler for the tests: each mode does one
// thing a handler might do (or must not be able to do) in its container.
package main

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "exit1":
		fmt.Println("probe: failing on purpose")
		os.Exit(1)
	case "sleep":
		time.Sleep(time.Hour)
	case "net":
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+os.Args[2], 2*time.Second)
		if err != nil {
			fmt.Println("probe: no network:", err)
			os.Exit(3)
		}
		c.Close()
		fmt.Println("probe: reached the host")
	case "etc":
		if err := os.WriteFile("/etc/mossfs-trigger-probe", []byte("x"), 0o644); err != nil {
			fmt.Println("probe: cannot write /etc:", err)
			os.Exit(4)
		}
	case "write":
		if err := os.MkdirAll(dir(os.Args[2]), 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fail(err)
		}
	case "copy":
		data, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(os.Args[3], data, 0o644); err != nil {
			fail(err)
		}
	case "env":
		// What the handler sees: environment, identity, mounts' writability.
		var b strings.Builder
		env := os.Environ()
		sort.Strings(env)
		fmt.Fprintf(&b, "env=%s\n", strings.Join(env, ","))
		fmt.Fprintf(&b, "uid=%d\n", os.Getuid())
		procs, _ := os.ReadDir("/proc")
		n := 0
		for _, p := range procs {
			if p.Name()[0] >= '0' && p.Name()[0] <= '9' {
				n++
			}
		}
		fmt.Fprintf(&b, "processes=%d\n", n)
		wd, _ := os.Getwd()
		fmt.Fprintf(&b, "cwd=%s\n", wd)
		ents, _ := os.ReadDir("/")
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		fmt.Fprintf(&b, "root=%s\n", strings.Join(names, ","))
		for _, d := range []string{"/tmp", "/var", "/run", "/usr", "/etc", "/"} {
			err := os.WriteFile(d+"/.probe", []byte("x"), 0o644)
			fmt.Fprintf(&b, "writable %s=%v\n", d, err == nil)
			os.Remove(d + "/.probe")
		}
		ifs, _ := net.Interfaces()
		var ifn []string
		for _, i := range ifs {
			ifn = append(ifn, i.Name)
		}
		fmt.Fprintf(&b, "interfaces=%s\n", strings.Join(ifn, ","))
		st, err := os.Stdin.Stat()
		fmt.Fprintf(&b, "stdin-char=%v\n", err == nil && st.Mode()&os.ModeCharDevice != 0)
		if err := os.MkdirAll("/usr/share/probe", 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile("/usr/share/probe/env.txt", []byte(b.String()), 0o644); err != nil {
			fail(err)
		}
	case "overlay":
		// Every form of upper-layer content: a metadata-only copy-up
		// (chmod), a renamed directory (redirect), a whiteout, an opaque
		// directory, a changed file and a new one.
		steps := []error{
			os.Chmod("/usr/share/probe-in/chmod-me", 0o600),
			os.Rename("/usr/share/probe-in/old-dir", "/usr/share/probe-in/new-dir"),
			os.Remove("/usr/share/probe-in/delete-me"),
			os.RemoveAll("/usr/share/probe-in/opaque"),
			os.Mkdir("/usr/share/probe-in/opaque", 0o755),
			os.WriteFile("/usr/share/probe-in/opaque/fresh", []byte("fresh\n"), 0o644),
			os.WriteFile("/usr/share/probe-in/change-me", []byte("changed\n"), 0o644),
			os.WriteFile("/usr/share/probe-in/new-file", []byte("new\n"), 0o644),
		}
		for _, err := range steps {
			if err != nil {
				fail(err)
			}
		}
	default:
		os.Exit(2)
	}
}

func dir(p string) string { return p[:strings.LastIndex(p, "/")] }

func fail(err error) {
	fmt.Println("probe:", err)
	os.Exit(5)
}
