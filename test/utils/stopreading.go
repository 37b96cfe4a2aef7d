package utils

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// StopReading mounts the slow-read attack on a TLS server at addr on
// 127.0.0.1: a connection with a tiny receive window pipelines request
// over and over and never reads an answer, so the server's writes stall
// once TCP's buffers fill. It returns the connection and a channel that
// closes when the writing stops (the server closed the connection, or
// enough was sent to stall any server). The caller closes the connection.
func StopReading(addr string, cfg *tls.Config, request string) (*tls.Conn, <-chan struct{}, error) {
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	conn := tls.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, nil, err
	}
	batch := strings.Repeat(request, 500)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 40 MB of requests: answers to them fill any socket buffer.
		for sent := 0; sent < 40<<20; sent += len(batch) {
			if _, err := conn.Write([]byte(batch)); err != nil {
				return
			}
		}
	}()
	return conn, done, nil
}

// PeerEstablished reports whether the other end of conn, a TCP
// connection over 127.0.0.1 to a server on this machine, is still an
// established socket in /proc/net/tcp: false once the server has closed
// its side, even while the FIN waits behind data the client never read.
// Callers check it is true first, so that a lookup that finds nothing
// cannot pass for a closed connection.
func PeerEstablished(conn net.Conn) (bool, error) {
	local, ok1 := conn.LocalAddr().(*net.TCPAddr)
	remote, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return false, fmt.Errorf("not a TCP connection: %s", conn.LocalAddr())
	}
	if remote.IP.To4() == nil || local.IP.To4() == nil {
		return false, fmt.Errorf("%s: only IPv4 connections are looked up in /proc/net/tcp", remote)
	}
	// The server's socket: local is its address, remote is ours.
	want := procAddr(remote) + " " + procAddr(local) + " 01 " // 01: ESTABLISHED
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 3 &&
			strings.Join(fields[1:4], " ")+" " == want {
			return true, nil
		}
	}
	return false, sc.Err()
}

// procAddr is an IPv4 address and port as /proc/net/tcp spells them: the
// address as a little-endian word, the port big-endian, both in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}
