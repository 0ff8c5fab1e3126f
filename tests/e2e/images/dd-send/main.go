// Command dd-send sends one payload to a Unix socket the way the Datadog
// Agent's clients do, so end-to-end tests can check that a socket mounted into
// a pod reaches the agent on the host.
//
//	dd-send dgram  <socket path> <payload>   one SOCK_DGRAM datagram (DogStatsD)
//	dd-send stream <socket path> <payload>   SOCK_STREAM: connect, write the
//	                                         payload, close the write side (APM)
//
// In stream mode whatever the server answers before it closes the connection
// (or before a 5 s read timeout) is copied to stdout. Any failure to connect
// or to write exits 1 with a message on stderr; bad usage exits 2.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

const usage = "usage: dd-send dgram|stream <socket path> <payload>"

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	mode, path, payload := os.Args[1], os.Args[2], []byte(os.Args[3])
	var err error
	switch mode {
	case "dgram":
		err = sendDatagram(path, payload)
	case "stream":
		err = sendStream(path, payload)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dd-send: %s %s: %v\n", mode, path, err)
		os.Exit(1)
	}
}

// sendDatagram writes payload as a single datagram; a short write is an error
// because a datagram is never split.
func sendDatagram(path string, payload []byte) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	n, err := conn.Write(payload)
	if err != nil {
		return err
	}
	if n != len(payload) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(payload))
	}
	return nil
}

// sendStream connects, writes payload, half-closes so the server sees EOF,
// then relays the server's answer to stdout.
func sendStream(path string, payload []byte) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write(payload); err != nil {
		return err
	}
	if err := conn.CloseWrite(); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = io.Copy(os.Stdout, conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A server that keeps the connection open after answering is fine.
		return nil
	}
	return err
}
