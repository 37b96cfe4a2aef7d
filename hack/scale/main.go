// Command scale measures what the operator's objects cost where the cluster
// keeps them, for docs/scale.md ("on paper, 1M keys"):
//
//   - the bytes etcd stores per ApiKey, ApiKeyRecord, Secret and Event, as
//     the real controller writes them (a sample of keys issued through the
//     admission webhooks and the controller);
//   - etcd's database size, kube-apiserver's heap and RSS and etcd's RSS per
//     object, as the cluster grows to each -sizes entry by byte-exact
//     copies of the sample's objects written into etcd: one kind at a time
//     up to the first size, then all three per key, interleaved as
//     issuance writes them;
//   - full List times (paged and unpaged) and an auth replica's sync time and
//     heap at each size.
//
// It prints Markdown tables on stdout and progress on stderr.
//
//	go run ./hack/scale -sizes 10000,50000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apikey-operator/apikey-operator/hack/internal/harness"
)

// config is the command line.
type config struct {
	sample       int
	sizes        []int
	reconcilers  int
	issueTimeout time.Duration
	putWorkers   int
	listRuns     int
	pageSize     int
	logFile      string
	dump         string
	settle       time.Duration
	heapProfile  string
	sections     map[string]bool
}

var allSections = []string{"growth", "lists", "replica"}

func parseFlags() (config, error) {
	var c config
	var sizes, sections string
	flag.IntVar(&c.sample, "sample", 200, "Keys issued through admission and the real controller; their objects are measured and copied.")
	flag.StringVar(&sizes, "sizes", "10000,50000", "Comma-separated key counts to grow the cluster to, measuring at each.")
	flag.IntVar(&c.reconcilers, "reconcilers", 0, "The controller's MaxConcurrentReconciles (0: its default).")
	flag.DurationVar(&c.issueTimeout, "issue-timeout", 5*time.Minute, "How long to wait for the sample keys to be Ready.")
	flag.IntVar(&c.putWorkers, "put-workers", 4, "Parallel etcd transactions when copying objects.")
	flag.IntVar(&c.listRuns, "list-runs", 3, "Timed runs of each List; the report shows the median.")
	flag.IntVar(&c.pageSize, "page-size", 500, "limit= of the paged List (client-go's informers page by 500).")
	flag.StringVar(&c.logFile, "log", "", "File for controller-runtime, client-go and control-plane logs (default: a temporary file).")
	flag.DurationVar(&c.settle, "settle", 2*time.Minute,
		"Longest wait, after each compaction, for kube-apiserver's heap to stop shrinking.")
	flag.StringVar(&c.heapProfile, "apiserver-heap-profile", "", "Write kube-apiserver's heap profile at the largest size to this file.")
	flag.StringVar(&sections, "sections", strings.Join(allSections, ","),
		"Comma-separated: growth (etcd and kube-apiserver footprint at each size), lists (timed Lists), replica (an auth replica's start).")
	flag.StringVar(&c.dump, "dump", "", "Directory to write the template ApiKey and ApiKeyRecord to, as stored (JSON; they hold no token).")
	flag.Parse()
	prev := c.sample
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= prev {
			return c, fmt.Errorf("-sizes: %q must be increasing key counts above -sample (%d)", sizes, c.sample)
		}
		c.sizes = append(c.sizes, n)
		prev = n
	}
	c.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		if !slices.Contains(allSections, s) {
			return c, fmt.Errorf("-sections: unknown section %q", s)
		}
		c.sections[s] = true
	}
	if c.sample < 1 || c.pageSize < 1 || c.listRuns < 1 || c.putWorkers < 1 {
		return c, fmt.Errorf("-sample, -page-size, -list-runs and -put-workers must be positive")
	}
	return c, nil
}

func main() {
	c, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logs, err := harness.OpenLogs(c.logFile, "apikey-scale-*.log")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer func() { _ = logs.Close() }()
	harness.Progress("logs go to %s", logs.Name())
	begin := time.Now()
	r, err := run(context.Background(), c)
	if r != nil {
		r.took = time.Since(begin)
		r.write(os.Stdout, c)
	}
	if err != nil {
		harness.Progress("failed: %v", err)
		os.Exit(1)
	}
}
