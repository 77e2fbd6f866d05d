package quiesce_test

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func errorf(format string, args ...any) error { return errors.New(fmt.Sprintf(format, args...)) }

// summarize prints min / median / max of a series of milliseconds.
func summarize(ms []float64) string {
	if len(ms) == 0 {
		return "-"
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	return fmt.Sprintf("min %.1f, median %.1f, max %.1f", s[0], s[len(s)/2], s[len(s)-1])
}
