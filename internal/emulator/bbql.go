package emulator

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A small subset of BBQL (Bitbucket's `q=` filter language): `field op value` clauses
// joined by AND / OR (AND binds tighter, no parentheses). Operators: = != ~ !~ > >= < <=.
// Values are quoted strings or bare tokens (datetimes, numbers, true/false/null).

type fieldGetter func(field string) (any, bool)

type bbqlClause struct {
	field, op, value string
}

type bbqlQuery [][]bbqlClause // OR of ANDs

func parseBBQL(q string) (bbqlQuery, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, nil
	}
	toks, err := tokenizeBBQL(q)
	if err != nil {
		return nil, err
	}
	var out bbqlQuery
	var cur []bbqlClause
	for i := 0; i < len(toks); {
		if i+2 >= len(toks) {
			return nil, fmt.Errorf("incomplete expression in %q", q)
		}
		c := bbqlClause{field: toks[i], op: toks[i+1], value: toks[i+2]}
		switch c.op {
		case "=", "!=", "~", "!~", ">", ">=", "<", "<=":
		default:
			return nil, fmt.Errorf("unsupported operator %q", c.op)
		}
		cur = append(cur, c)
		i += 3
		if i < len(toks) {
			switch strings.ToUpper(toks[i]) {
			case "AND":
			case "OR":
				out = append(out, cur)
				cur = nil
			default:
				return nil, fmt.Errorf("expected AND or OR, got %q", toks[i])
			}
			i++
			if i >= len(toks) {
				return nil, fmt.Errorf("dangling operator in %q", q)
			}
		}
	}
	return append(out, cur), nil
}

func tokenizeBBQL(q string) ([]string, error) {
	var toks []string
	for i := 0; i < len(q); {
		ch := q[i]
		switch {
		case ch == ' ' || ch == '\t':
			i++
		case ch == '"':
			j := i + 1
			var b strings.Builder
			for ; j < len(q) && q[j] != '"'; j++ {
				if q[j] == '\\' && j+1 < len(q) {
					j++
				}
				b.WriteByte(q[j])
			}
			if j >= len(q) {
				return nil, fmt.Errorf("unterminated string in %q", q)
			}
			toks = append(toks, "\x00"+b.String())
			i = j + 1
		case strings.ContainsRune("=!~<>", rune(ch)):
			j := i + 1
			if j < len(q) && (q[j] == '=' || q[j] == '~') {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		default:
			j := i
			for j < len(q) && !strings.ContainsRune(" \t=!~<>\"", rune(q[j])) {
				j++
			}
			toks = append(toks, q[i:j])
			i = j
		}
	}
	// Strip the quote marker only from values; field names and keywords are never quoted.
	for i := range toks {
		toks[i] = strings.TrimPrefix(toks[i], "\x00")
	}
	return toks, nil
}

func parseBBQLTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999-0700", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid datetime %q", v)
}

func compareValues(have any, value string) (int, error) {
	switch h := have.(type) {
	case time.Time:
		t, err := parseBBQLTime(value)
		if err != nil {
			return 0, err
		}
		// Compare at the microsecond precision timestamps are rendered with, so that
		// `updated_on > <a rendered updated_on>` excludes that object, as upstream.
		return h.Truncate(time.Microsecond).Compare(t), nil
	case int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return 0, fmt.Errorf("invalid number %q", value)
		}
		switch {
		case h < n:
			return -1, nil
		case h > n:
			return 1, nil
		}
		return 0, nil
	case bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return 0, fmt.Errorf("invalid boolean %q", value)
		}
		if h == b {
			return 0, nil
		}
		return 1, nil
	case string:
		return strings.Compare(h, value), nil
	}
	return 0, fmt.Errorf("unsupported field type")
}

func (q bbqlQuery) match(get fieldGetter) (bool, error) {
	if len(q) == 0 {
		return true, nil
	}
	for _, and := range q {
		all := true
		for _, c := range and {
			ok, err := c.match(get)
			if err != nil {
				return false, err
			}
			if !ok {
				all = false
				break
			}
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

func (c bbqlClause) match(get fieldGetter) (bool, error) {
	have, ok := get(c.field)
	if !ok {
		return false, fmt.Errorf("'%s' is not a valid field name", c.field)
	}
	if c.op == "~" || c.op == "!~" {
		s := strings.Contains(strings.ToLower(fmt.Sprint(have)), strings.ToLower(c.value))
		return s == (c.op == "~"), nil
	}
	cmp, err := compareValues(have, c.value)
	if err != nil {
		return false, err
	}
	switch c.op {
	case "=":
		return cmp == 0, nil
	case "!=":
		return cmp != 0, nil
	case ">":
		return cmp > 0, nil
	case ">=":
		return cmp >= 0, nil
	case "<":
		return cmp < 0, nil
	case "<=":
		return cmp <= 0, nil
	}
	return false, nil
}

func lessValues(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		return x.Before(b.(time.Time))
	case int:
		return x < b.(int)
	case string:
		return x < b.(string)
	case bool:
		return !x && b.(bool)
	}
	return false
}

// filterSort applies q and sort to items; get returns the field getter of item i.
func filterSort[T any](items []T, q, sortBy string, get func(T) fieldGetter) ([]T, error) {
	query, err := parseBBQL(q)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, it := range items {
		ok, err := query.match(get(it))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, it)
		}
	}
	if sortBy != "" {
		desc := strings.HasPrefix(sortBy, "-")
		field := strings.TrimPrefix(sortBy, "-")
		if len(out) > 0 {
			if _, ok := get(out[0])(field); !ok {
				return nil, fmt.Errorf("'%s' is not a valid sort field", field)
			}
		}
		sort.SliceStable(out, func(i, j int) bool {
			a, _ := get(out[i])(field)
			b, _ := get(out[j])(field)
			if desc {
				return lessValues(b, a)
			}
			return lessValues(a, b)
		})
	}
	return out, nil
}
