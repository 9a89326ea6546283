package routing

import "fmt"

// Strategy orders the available candidates.
type Strategy uint8

const (
	// LeastUsed picks the fewest requests per weight, then the least recently used, then config order.
	LeastUsed Strategy = iota
	// RoundRobin cycles through the candidates.
	RoundRobin
	// Priority picks the lowest priority number, least-used among equals.
	Priority
)

// ParseStrategy reads a config value.
func ParseStrategy(s string) (Strategy, error) {
	switch s {
	case "least-used", "":
		return LeastUsed, nil
	case "round-robin":
		return RoundRobin, nil
	case "priority":
		return Priority, nil
	}
	return 0, fmt.Errorf("unknown strategy %q (use least-used, round-robin or priority)", s)
}

func (s Strategy) String() string {
	switch s {
	case RoundRobin:
		return "round-robin"
	case Priority:
		return "priority"
	}
	return "least-used"
}
