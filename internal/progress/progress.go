// Package progress draws progress bars for long work (mpb, as podman does)
// on a terminal, and nothing in pipes. It is not part of package cli,
// which every mossfs command links: mpb's dependencies compile regular
// expressions and tables when a program starts (0.15 ms of mossfs's start
// in GODEBUG=inittrace), and mossfs draws no progress bars.
package progress

import (
	"os"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/mossfs/mossfs/internal/cli"
)

// Progress is a progress display for long work. On a terminal (stderr) it
// draws mpb bars; otherwise every method does nothing.
type Progress struct {
	p *mpb.Progress
}

// New returns a Progress drawing on stderr if it is a terminal and
// quiet is false.
func New(quiet bool) *Progress {
	if quiet || !cli.IsTerminal(os.Stderr) {
		return &Progress{}
	}
	return &Progress{p: mpb.New(mpb.WithOutput(os.Stderr), mpb.WithAutoRefresh())}
}

// Bar is one progress bar; a nil *Bar (quiet mode) accepts every call.
type Bar struct{ b *mpb.Bar }

// AddBar adds a bar with a name and a total. bytes selects byte units.
func (p *Progress) AddBar(name string, total int64, bytes bool) *Bar {
	if p == nil || p.p == nil {
		return nil
	}
	counter := decor.CountersNoUnit("%d / %d")
	if bytes {
		counter = decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")
	}
	b := p.p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), counter),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)),
	)
	return &Bar{b: b}
}

// Add advances the bar by n.
func (b *Bar) Add(n int64) {
	if b != nil {
		b.b.IncrInt64(n)
	}
}

// SetTotal changes the total; complete marks the bar done.
func (b *Bar) SetTotal(total int64, complete bool) {
	if b != nil {
		b.b.SetTotal(total, complete)
	}
}

// Wait finishes drawing. Call it once all bars are complete or aborted.
func (p *Progress) Wait() {
	if p != nil && p.p != nil {
		p.p.Shutdown()
	}
}
