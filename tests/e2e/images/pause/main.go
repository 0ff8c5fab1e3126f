// Command pause is the pod sandbox process of the end-to-end cluster: it holds
// the pod's namespaces open until the runtime stops it.
//
// It sleeps until SIGTERM or SIGINT and then exits 0. As PID 1 of a pod that
// shares its process namespace it also reaps orphaned children, as the
// upstream pause image does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
