package routing

// CandidateState is what the store knows of a candidate at the moment of a pick.
type CandidateState struct {
	Requests int64
	// LastUsed in Unix milliseconds; 0 = never.
	LastUsed int64
	// Hard: blocked by a cooldown or an invalid credential. Soft: near its limit.
	Hard, Soft bool
}

// Choose is the selection policy as a pure function, shared by every store (the Redis store
// mirrors it in Lua; a contract test keeps the two equal). It returns the index of the chosen
// candidate, or -1 when all are blocked, and why it was chosen. rr is a counter the store
// increments on every pick, used by round-robin.
func Choose(s Strategy, c []Candidate, st []CandidateState, rr uint64) (int, string) {
	soft := false
	n := 0
	for i := range c {
		if !st[i].Hard {
			n++
			if !st[i].Soft {
				soft = false
				break
			}
			soft = true
		}
	}
	if n == 0 {
		return -1, ""
	}
	// When every available candidate is soft, they all compete; otherwise soft ones sit out.
	usable := func(i int) bool { return !st[i].Hard && (soft || !st[i].Soft) }
	why := s.String()
	if soft {
		why = "only-soft"
	}
	switch s {
	case RoundRobin:
		k := 0
		for i := range c {
			if usable(i) {
				k++
			}
		}
		want := int(rr % uint64(k))
		for i := range c {
			if usable(i) {
				if want == 0 {
					return i, why
				}
				want--
			}
		}
	}
	best := -1
	for i := range c {
		if !usable(i) {
			continue
		}
		if best < 0 || less(s, c, st, i, best) {
			best = i
		}
	}
	return best, why
}

// less reports whether candidate i beats candidate j (j earlier in config order on ties).
func less(s Strategy, c []Candidate, st []CandidateState, i, j int) bool {
	if s == Priority && c[i].Priority != c[j].Priority {
		return c[i].Priority < c[j].Priority
	}
	// Compare requests/weight without division: ri*wj vs rj*wi.
	wi, wj := max(int64(c[i].Weight), 1), max(int64(c[j].Weight), 1)
	if a, b := st[i].Requests*wj, st[j].Requests*wi; a != b {
		return a < b
	}
	return st[i].LastUsed < st[j].LastUsed
}
