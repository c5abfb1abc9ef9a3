package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/coreos/go-systemd/v22/journal"
)

// copyOutput forwards a worker's stdout and stderr (the read end r) until
// it closes: to the journal with structured fields when appd's own output
// goes there (Options.Journal), else as prefixed lines to Options.Output.
func (s *Supervisor) copyOutput(r *os.File, w *worker) {
	if !s.opts.Journal {
		go copyLines(s.opts.Output, r, fmt.Sprintf("[%s pid %d] ", wname(w), w.pid))
		return
	}
	slot := strconv.Itoa(w.slot)
	if w.kind == zygote {
		slot = "zygote"
	}
	pid := strconv.Itoa(w.pid)
	// journalctl shows SYSLOG_IDENTIFIER[SYSLOG_PID]; OBJECT_PID makes
	// journald add the worker's own _COMM, _EXE, ... as OBJECT_* fields.
	fields := map[string]string{
		"SYSLOG_IDENTIFIER": filepath.Base(w.cfg.App.Command[0]),
		"SYSLOG_PID":        pid,
		"OBJECT_PID":        pid,
		"APPD_INSTANCE":     s.opts.Name,
		"APPD_SLOT":         slot,
		"APPD_GENERATION":   strconv.Itoa(w.gen),
		"APPD_WORKER_PID":   pid,
	}
	go journalLines(r, "["+wname(w)+"] ", fields, s.opts.Output)
}

// journalLines sends each line of r to the journal with fields, at the
// priority of its sd-daemon "<N>" prefix (default info). Should the
// journal refuse a line, it goes to fallback with the prefix instead.
func journalLines(r *os.File, prefix string, fields map[string]string, fallback io.Writer) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > 0 {
			prio := journal.PriInfo
			if len(line) >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>' {
				prio = journal.Priority(line[1] - '0')
				line = line[3:]
			}
			if n := len(line); n > 0 && line[n-1] == '\n' {
				line = line[:n-1]
			}
			if jerr := journal.Send(prefix+string(line), prio, fields); jerr != nil {
				fmt.Fprintf(fallback, "<%d>%s%s\n", prio, prefix, line)
			}
		}
		if err != nil {
			return
		}
	}
}
