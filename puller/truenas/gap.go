package truenas

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LongestGap is the longest time between two consecutive runs of the
// schedule, over two years of UTC calendar (so month lengths, leap days
// and weekday patterns all show). It errs if the schedule never runs
// twice in that span.
func (s Schedule) LongestGap() (time.Duration, error) {
	var sets [5][]bool
	limits := [5][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {0, 7}}
	names := [5]map[string]int{nil, nil, nil, monthNames, dayNames}
	for i, f := range []string{s.Minute, s.Hour, s.Dom, s.Month, s.Dow} {
		set, err := cronSet(f, limits[i][0], limits[i][1], names[i])
		if err != nil {
			return 0, fmt.Errorf("schedule %q: %w", s.String(), err)
		}
		sets[i] = set
	}
	if sets[4][7] {
		sets[4][0] = true // 7 is Sunday too
	}
	// cron: when both day fields are restricted, a day matching either runs.
	domAny, dowAny := s.Dom == "*", s.Dow == "*"
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var prev, first time.Time
	var longest time.Duration
	for d := start; d.Before(start.AddDate(2, 0, 0)); d = d.AddDate(0, 0, 1) {
		if !sets[3][int(d.Month())] {
			continue
		}
		dom, dow := sets[2][d.Day()], sets[4][int(d.Weekday())]
		switch {
		case domAny && dowAny, !domAny && dowAny:
			if !dom {
				continue
			}
		case domAny && !dowAny:
			if !dow {
				continue
			}
		default:
			if !dom && !dow {
				continue
			}
		}
		for h := 0; h < 24; h++ {
			if !sets[1][h] {
				continue
			}
			for m := 0; m < 60; m++ {
				if !sets[0][m] {
					continue
				}
				t := d.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
				if first.IsZero() {
					first = t
				} else if g := t.Sub(prev); g > longest {
					longest = g
				}
				prev = t
			}
		}
	}
	if longest == 0 {
		return 0, fmt.Errorf("schedule %q runs at most once in two years", s.String())
	}
	return longest, nil
}

var monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}
var dayNames = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

// cronSet expands one cron field (lists of N, A-B, */S, A-B/S, names).
func cronSet(field string, lo, hi int, names map[string]int) ([]bool, error) {
	set := make([]bool, hi+1)
	num := func(s string) (int, error) {
		if v, ok := names[strings.ToLower(s)]; ok {
			return v, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%q is not a number from %d to %d", s, lo, hi)
		}
		return v, nil
	}
	for _, part := range strings.Split(field, ",") {
		rng, stepStr, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			var err error
			if step, err = strconv.Atoi(stepStr); err != nil || step < 1 {
				return nil, fmt.Errorf("step %q is not a positive number", stepStr)
			}
		}
		a, b := lo, hi
		if rng != "*" {
			x, y, isRange := strings.Cut(rng, "-")
			var err error
			if a, err = num(x); err != nil {
				return nil, err
			}
			b = a
			if isRange {
				if b, err = num(y); err != nil {
					return nil, err
				}
			} else if hasStep {
				b = hi
			}
			if b < a {
				return nil, fmt.Errorf("range %q runs backwards", rng)
			}
		}
		for v := a; v <= b; v += step {
			set[v] = true
		}
	}
	return set, nil
}
