package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestMemoryThenFile(t *testing.T) {
	for _, c := range []struct {
		name        string
		mem, size   int64
		file        bool
		writeChunks int
	}{
		{"empty", 16 << 10, 0, false, 1},
		{"small", 16 << 10, 100, false, 1},
		{"exactly memory", 32 << 10, 32 << 10, false, 7},
		{"spills", 16 << 10, 300 << 10, true, 13},
		{"file only", 0, 50 << 10, true, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := New(Options{Dir: dir, Memory: c.mem})
			defer s.Close()
			want := pattern(int(c.size))
			step := max(1, len(want)/c.writeChunks)
			for off := 0; off < len(want); off += step {
				if _, err := s.Write(want[off:min(len(want), off+step)]); err != nil {
					t.Fatal(err)
				}
			}
			if s.Size() != c.size || s.HasFile() != c.file {
				t.Fatalf("size %d, file %v; want %d, %v", s.Size(), s.HasFile(), c.size, c.file)
			}
			if c.file && s.FileBytes() != c.size-(c.mem+BlockSize-1)/BlockSize*BlockSize {
				t.Fatalf("%d bytes in the file", s.FileBytes())
			}
			// The file has no name: nothing in the directory, even now.
			if names := entries(t, dir); len(names) != 0 {
				t.Fatalf("the spool left %v in its directory", names)
			}
			var got bytes.Buffer
			if _, err := s.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("WriteTo: %d bytes, equal %v, %v", got.Len(), bytes.Equal(got.Bytes(), want), err)
			}
			// ReadAt across the memory/file boundary, in odd pieces.
			buf := make([]byte, 5000)
			var all []byte
			for off := int64(0); ; {
				n, err := s.ReadAt(buf, off)
				all = append(all, buf[:n]...)
				off += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(all, want) {
				t.Fatalf("ReadAt gave %d bytes, differing", len(all))
			}
		})
	}
}

func TestReadFromAndMax(t *testing.T) {
	dir := t.TempDir()
	s := New(Options{Dir: dir, Memory: 16 << 10, Max: 100 << 10})
	defer s.Close()
	want := pattern(100 << 10)
	if n, err := s.ReadFrom(bytes.NewReader(want)); err != nil || n != int64(len(want)) {
		t.Fatalf("ReadFrom of exactly Max: %d %v", n, err)
	}
	var got bytes.Buffer
	s.WriteTo(&got)
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatal("content differs")
	}
	over := New(Options{Dir: dir, Memory: 16 << 10, Max: 100 << 10})
	defer over.Close()
	if _, err := over.ReadFrom(bytes.NewReader(pattern(100<<10 + 1))); !errors.Is(err, ErrFull) {
		t.Fatalf("one byte over Max: %v, want ErrFull", err)
	}
	small := New(Options{Dir: dir, Memory: 16 << 10, Max: 10})
	defer small.Close()
	if _, err := small.ReadFrom(strings.NewReader("12345678901")); !errors.Is(err, ErrFull) {
		t.Fatalf("over a small Max in memory: %v, want ErrFull", err)
	}
}

func TestMemoryIsOneSlice(t *testing.T) {
	s := New(Options{Dir: t.TempDir(), Memory: 64 << 10})
	defer s.Close()
	s.Write([]byte("hello"))
	if string(s.Memory()) != "hello" {
		t.Fatalf("Memory() = %q", s.Memory())
	}
	s.Write(pattern(20 << 10))
	if s.Memory() != nil {
		t.Fatal("Memory() of more than one block")
	}
}

// TestConcurrentReader: one goroutine writes while another reads what is
// already there, as a response reaches a slow client.
func TestConcurrentReader(t *testing.T) {
	s := New(Options{Dir: t.TempDir(), Memory: 32 << 10})
	defer s.Close()
	want := pattern(1 << 20)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for off := 0; off < len(want); off += 3000 {
			s.Write(want[off:min(len(want), off+3000)])
		}
	}()
	var got []byte
	buf := make([]byte, 7000)
	for deadline := time.Now().Add(30 * time.Second); len(got) < len(want); {
		avail := s.Size() - int64(len(got))
		if avail == 0 {
			if time.Now().After(deadline) {
				t.Fatal("writer stalled")
			}
			continue
		}
		n, err := s.ReadAt(buf[:min(int64(len(buf)), avail)], int64(len(got)))
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	wg.Wait()
	if !bytes.Equal(got, want) {
		t.Fatal("read while writing: content differs")
	}
}

// TestWriteToSendfile: the file part goes out through a TCP connection's
// ReadFrom (sendfile), and arrives whole.
func TestWriteToSendfile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Dir: t.TempDir(), Memory: 16 << 10})
	defer s.Close()
	want := pattern(2 << 20)
	s.Write(want)
	if n, err := s.WriteTo(c); err != nil || n != int64(len(want)) {
		t.Fatalf("WriteTo: %d %v", n, err)
	}
	c.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("received %d bytes, differing", len(b))
	}
}

func TestCheckDir(t *testing.T) {
	if err := CheckDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir("/nonexistent/spool"); err == nil {
		t.Fatal("a missing directory passed")
	}
	if err := CheckDir("relative"); err == nil {
		t.Fatal("a relative path passed")
	}
}

// TestNothingLeftAfterKill: a process that spooled to disk and was killed
// with SIGKILL leaves nothing in the directory.
func TestNothingLeftAfterKill(t *testing.T) {
	if dir := os.Getenv("SPOOL_CHILD_DIR"); dir != "" {
		s := New(Options{Dir: dir, Memory: 0})
		s.Write(pattern(1 << 20))
		os.Stdout.WriteString("spooled\n")
		time.Sleep(time.Minute) // until killed
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNothingLeftAfterKill$")
	cmd.Env = append(os.Environ(), "SPOOL_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "spooled\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	// The child holds a file in dir right now, nameless.
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	held := false
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, fd.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
			held = true
		}
	}
	if !held {
		t.Error("the child holds no file in the spool directory")
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("the spool file has a name: %v", names)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if names := entries(t, dir); len(names) != 0 {
		t.Fatalf("a killed process left %v", names)
	}
}
