package utils

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a binary a test runs as its own process, as it runs in a
// cluster. Everything it prints, stdout and stderr, goes to a LogBuffer the
// test can search and to a file it can point a person at; nothing goes to
// the test's own output, which a token in the log must not reach.
type Process struct {
	// Name says which process this is in messages.
	Name string
	// LogPath is the file holding the process's whole output.
	LogPath string

	cmd  *exec.Cmd
	file *os.File
	done chan struct{}
	err  error
}

// StartProcess runs path with args, appending its output to log and to the
// file logPath (created if missing, appended to if it exists, so one file
// holds every run of a restarted process).
func StartProcess(name, path string, args []string, log *LogBuffer, logPath string) (*Process, error) {
	file, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	out := io.MultiWriter(log, file)
	cmd.Stdout, cmd.Stderr = out, out
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, file: file, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = file.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits up to grace for the process to end, then
// kills it. It returns once the process is gone and its output written.
func (p *Process) Stop(grace time.Duration) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.Name, grace)
}
