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
//	loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -wait
//
// listens at once (the session's proxy socket appears later; a connection before
// it fails), runs no child and waits. The agent is started with `docker exec`.
// On SIGTERM, SIGINT, SIGHUP or SIGQUIT it passes the signal to every process it
// may signal (the agent runs as the same user), waits until they are all gone,
// then exits 0, so the container's stop gives the agent its grace period. It does
// that only as a non-root user whose parent is PID 1 (the container's init); run
// anywhere else (as root, or on a host) it just exits on the signal.
//
// Static, stdlib only: CGO_ENABLED=0 GO111MODULE=off go build -trimpath -ldflags='-s -w'.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
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

// waitMode: the idle main process of a pooled container (see the package comment).
func waitMode(listen, socketPath string) {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fail(exitSetup, "cannot listen on %s: %v", listen, err)
	}
	go serve(ln, socketPath)
	sig := (<-signals).(syscall.Signal)
	// kill(-1, sig) reaches every process this user may signal. That is the agent only
	// inside a pool container: a non-root user whose parent is the container's init
	// (PID 1 of its own PID namespace). Anywhere else (a host, a root user) it would
	// reach processes that are none of its business: then it only exits.
	if os.Getuid() == 0 || os.Getppid() != 1 {
		os.Exit(0)
	}
	_ = syscall.Kill(-1, sig)
	for {
		// Reap what is ours; the rest belongs to the container's init.
		var ws syscall.WaitStatus
		for {
			pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 {
				break
			}
		}
		if err := syscall.Kill(-1, 0); err == syscall.ESRCH {
			os.Exit(0)
		}
		select {
		case s := <-signals:
			_ = syscall.Kill(-1, s.(syscall.Signal))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:3128", "TCP address to listen on (loopback)")
	socketPath := flag.String("socket", "/run/loki/egress.sock", "Unix socket of the egress proxy")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -- <command> [args...]\n       loki-forward -listen 127.0.0.1:3128 -socket /run/loki/egress.sock -wait")
	}
	wait := flag.Bool("wait", false, "run no command: listen, wait for a signal, pass it on to every process, exit when they are gone")
	flag.Parse()
	argv := flag.Args()
	if *wait {
		if len(argv) != 0 {
			fail(2, "-wait takes no command")
		}
		waitMode(*listen, *socketPath)
	}
	if len(argv) == 0 {
		flag.Usage()
		os.Exit(2)
	}

	st, err := os.Stat(*socketPath)
	if err != nil {
		fail(exitSetup, "egress socket %s is missing: %v", *socketPath, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		fail(exitSetup, "egress socket %s is not a socket", *socketPath)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(exitSetup, "cannot listen on %s: %v", *listen, err)
	}
	go serve(ln, *socketPath)

	// Subscribe before the child exists so no signal is lost in between.
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = os.Environ()
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
