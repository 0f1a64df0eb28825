// loki-forward: the in-container half of a session's egress allowlist.
//
// The container has no network (NetworkMode none, only lo). loki-forward listens
// on a loopback TCP address (127.0.0.1:3128), pipes every connection it accepts to
// the worker's per-session proxy over a bind-mounted Unix socket, and runs the
// agent as its child:
//
//	loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -- <agent argv...>
//
// The agent inherits stdin, stdout, stderr and the environment; SIGTERM, SIGINT,
// SIGHUP and SIGQUIT are passed on to it; loki-forward exits with the agent's exit
// code (128+signal when it was killed by a signal). As PID 1 it also reaps orphans.
// When it cannot listen, or the socket is missing, it prints one line to stderr and
// exits 126 without starting the agent. It decides nothing: the proxy does.
//
// In a warm-pool container it is the main process before any session exists:
//
//	loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -control /run/loki/control.sock
//
// listens at once, dials the worker's control socket (made by the worker in the
// slot's directory before the container started) and waits for one launch message,
// a JSON line {"argv": [...], "env": [...], "dir": "/workspace"}; then it runs that command in that directory with the
// container's own environment plus those entries, as above. Closing the control socket or a signal before the
// message ends it with 0 and nothing started.
//
// Static, stdlib only: CGO_ENABLED=0 GO111MODULE=off go build -trimpath -ldflags='-s -w'.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	exitSetup    = 126
	exitNotFound = 127
	dialTimeout  = 10 * time.Second
)

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "loki-forward: "+format+"\n", args...)
	os.Exit(code)
}

// halfCloser is a connection whose write side can be closed alone (TCP and Unix).
type halfCloser interface {
	CloseWrite() error
}

// pipe copies src to dst, then half-closes dst so the peer sees the end.
func pipe(dst, src net.Conn, wg *sync.WaitGroup) {
	defer wg.Done()
	_, _ = io.Copy(dst, src)
	if hc, ok := dst.(halfCloser); ok {
		_ = hc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

func forward(client net.Conn, socketPath string) {
	defer client.Close()
	upstream, err := net.DialTimeout("unix", socketPath, dialTimeout)
	if err != nil {
		return
	}
	defer upstream.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go pipe(upstream, client, &wg)
	go pipe(client, upstream, &wg)
	wg.Wait()
}

func serve(ln net.Listener, socketPath string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			// Out of file descriptors and the like: back off, keep serving.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go forward(conn, socketPath)
	}
}

func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// launchMessage is what the worker sends over the control socket: the agent's argv
// and the session's environment entries.
type launchMessage struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	// Dir is resolved again at launch: the session's worktree was mounted over the
	// workspace after this process started, and its own working directory is the
	// directory underneath.
	Dir string `json:"dir"`
}

// maxLaunchBytes bounds the launch message (a prompt of 96 KiB plus the environment).
const maxLaunchBytes = 1 << 20

// mergeEnv: the container's own environment (the image's, Docker's PATH, HOME) with
// the session's entries replacing or adding by name, as a fresh container gets it.
func mergeEnv(base, session []string) []string {
	name := func(kv string) string {
		if i := strings.IndexByte(kv, '='); i >= 0 {
			return kv[:i]
		}
		return kv
	}
	set := map[string]bool{}
	for _, kv := range session {
		set[name(kv)] = true
	}
	out := make([]string, 0, len(base)+len(session))
	for _, kv := range base {
		if !set[name(kv)] {
			out = append(out, kv)
		}
	}
	return append(out, session...)
}

// awaitLaunch dials the worker's control socket and reads one launch message (a JSON
// line). The connection stays open: when the worker closes it before sending, the
// slot is being removed, and this exits 0 without starting anything.
func awaitLaunch(controlPath string) launchMessage {
	var conn net.Conn
	var err error
	for i := 0; i < 200; i++ {
		conn, err = net.DialTimeout("unix", controlPath, dialTimeout)
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		fail(exitSetup, "control socket %s: %v", controlPath, err)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxLaunchBytes), 64*1024).ReadBytes('\n')
	conn.Close()
	if err != nil && len(line) == 0 {
		os.Exit(0)
	}
	var msg launchMessage
	if err := json.Unmarshal(line, &msg); err != nil || len(msg.Argv) == 0 || msg.Argv[0] == "" || !strings.HasPrefix(msg.Dir, "/") {
		fail(exitSetup, "control socket %s: not a launch message", controlPath)
	}
	return msg
}

func main() {
	listen := flag.String("listen", "127.0.0.1:3128", "TCP address to listen on (loopback)")
	socketPath := flag.String("socket", "/run/loki/egress.sock", "Unix socket of the egress proxy")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -- <command> [args...]\n       loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -control /run/loki/control.sock")
	}
	control := flag.String("control", "", "pool mode: take the command and environment from the worker over this Unix socket")
	flag.Parse()
	argv := flag.Args()
	env := os.Environ()
	dir := ""
	if *control != "" && len(argv) != 0 {
		fail(2, "-control takes no command")
	}
	if *control == "" && len(argv) == 0 {
		flag.Usage()
		os.Exit(2)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(exitSetup, "cannot listen on %s: %v", *listen, err)
	}
	if *control != "" {
		// A signal while waiting: the slot is being removed; nothing to pass on.
		idle := make(chan os.Signal, 1)
		signal.Notify(idle, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
		launched := make(chan struct{})
		go func() {
			select {
			case <-idle:
				os.Exit(0)
			case <-launched:
			}
		}()
		msg := awaitLaunch(*control)
		signal.Stop(idle)
		close(launched)
		argv, env, dir = msg.Argv, mergeEnv(os.Environ(), msg.Env), msg.Dir
	}

	// Subscribe before the child exists so no signal is lost in between.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	// The proxy socket must be there now (in pool mode the session's proxy made it
	// before sending the launch message), unless the session has no egress.
	if st, err := os.Stat(*socketPath); err == nil && st.Mode()&os.ModeSocket == 0 {
		fail(exitSetup, "egress socket %s is not a socket", *socketPath)
	} else if err != nil && *control == "" {
		fail(exitSetup, "egress socket %s is missing: %v", *socketPath, err)
	}
	go serve(ln, *socketPath)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = env
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		code := exitSetup
		if _, ok := err.(*exec.Error); ok || os.IsNotExist(err) {
			code = exitNotFound
		}
		fail(code, "cannot start %s: %v", argv[0], err)
	}
	child := cmd.Process.Pid

	go func() {
		for sig := range signals {
			_ = syscall.Kill(child, sig.(syscall.Signal))
		}
	}()

	// Reap every child (orphans too, when this is PID 1) until the agent itself exits.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			fail(exitSetup, "wait: %v", err)
		}
		if pid == child {
			os.Exit(exitCode(ws))
		}
	}
}
