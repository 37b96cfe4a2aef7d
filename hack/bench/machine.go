package main

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineInfo is what the report says about where it ran.
type machineInfo struct {
	cpus, gomaxprocs int
	cpuModel         string
	memory           string
	goVersion        string
	kernel           string
	date             time.Time
}

const unknown = "unknown"

func describeMachine() machineInfo {
	m := machineInfo{
		cpus:       runtime.NumCPU(),
		gomaxprocs: runtime.GOMAXPROCS(0),
		cpuModel:   unknown,
		memory:     unknown,
		goVersion:  runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		kernel:     unknown,
		date:       time.Now().UTC(),
	}
	if v, ok := procField("/proc/cpuinfo", "model name"); ok {
		m.cpuModel = v
	}
	if v, ok := procField("/proc/meminfo", "MemTotal"); ok {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.memory = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64) + " GiB"
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages, as /proc/loadavg
// shows them: on a shared machine, anything above the CPU count is other
// work competing with the benchmark.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return unknown
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return unknown
	}
	return strings.Join(f[:3], ", ")
}

// procField is the value of the first "name: value" line of a /proc file.
func procField(path, name string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}
