package loadgen

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawConn is a minimal HTTP/1.1 keep-alive client for one connection, used by one worker
// at a time (a worker's own, or an agent's own with --agent-connections): a request is one write of pre-built bytes and the answer is parsed in place. It costs a
// fraction of net/http's client (no per-connection goroutines or channels), so on a small
// machine the load generator leaves the CPU to the server under test, as wrk does.
type rawConn struct {
	addr    string
	dial    func() (net.Conn, error) // nil: plain TCP to addr
	bufSize int                      // the answer buffer (0: 16 KiB)
	conn    net.Conn
	br      *bufio.Reader
}

const requestTimeout = 60 * time.Second

// rawHead is the request head up to the Content-Length value.
func rawHead(u *url.URL, path, auth string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: oneprotect-loadgen\r\n" +
		"Content-Type: application/json\r\nAuthorization: " + auth + "\r\nContent-Length: ")
}

// do sends req (a complete request) and reads the answer's status and body into body.
func (c *rawConn) do(req []byte, body *bytes.Buffer) (int, error) {
	if c.conn == nil {
		if err := c.open(); err != nil {
			return 0, err
		}
	}
	_ = c.conn.SetDeadline(time.Now().Add(requestTimeout))
	status, keep, err := c.roundTrip(req, body)
	if err != nil || !keep {
		c.close()
	}
	return status, err
}

// open connects (with c.dial when set, e.g. a TLS handshake).
func (c *rawConn) open() error {
	dial := c.dial
	if dial == nil {
		dial = func() (net.Conn, error) { return net.DialTimeout("tcp", c.addr, 5*time.Second) }
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, cmp.Or(c.bufSize, 16<<10))
	} else {
		c.br.Reset(conn)
	}
	return nil
}

func (c *rawConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

var errMalformed = errors.New("malformed HTTP answer")

func (c *rawConn) roundTrip(req []byte, body *bytes.Buffer) (status int, keep bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return 0, false, err
	}
	line, err := c.readLine()
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errMalformed
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		h, err := c.readLine()
		if err != nil {
			return status, false, err
		}
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return status, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return status, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keep = false
			}
		}
	}
	body.Reset()
	switch {
	case chunked:
		err = c.readChunked(body)
	case length >= 0:
		_, err = io.CopyN(body, c.br, int64(length))
	default: // no length: the body runs to the end of the connection
		_, err = body.ReadFrom(c.br)
		keep = false
	}
	return status, keep, err
}

func (c *rawConn) readChunked(body *bytes.Buffer) error {
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return errMalformed
		}
		if n == 0 {
			for { // trailers, up to the blank line
				t, err := c.readLine()
				if err != nil || len(t) == 0 {
					return err
				}
			}
		}
		if _, err := io.CopyN(body, c.br, n); err != nil {
			return err
		}
		if crlf, err := c.readLine(); err != nil || len(crlf) != 0 {
			return fmt.Errorf("%w: chunk not followed by CRLF", errMalformed)
		}
	}
}

// readLine returns one line without its CRLF; the slice is valid until the next read.
func (c *rawConn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errMalformed
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}
