package store

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"
)

// CSVWriter writes samples as CSV in the table's schema: a header of SampleColumns, then one
// row per sample, NULL as an empty field. Tests and offline tools read it in place of the
// database.
type CSVWriter struct {
	w      *csv.Writer
	header bool
	row    []string
}

// NewCSVWriter returns a writer to w. Call Flush when done.
func NewCSVWriter(w io.Writer) *CSVWriter { return &CSVWriter{w: csv.NewWriter(w)} }

// Write validates s and writes it as one row.
func (c *CSVWriter) Write(s Sample) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !c.header {
		if err := c.w.Write(SampleColumns()); err != nil {
			return fmt.Errorf("write samples: %w", err)
		}
		c.header = true
	}
	c.row = c.row[:0]
	for _, v := range s.values() {
		c.row = append(c.row, csvField(v))
	}
	if err := c.w.Write(c.row); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}

// Flush writes what is buffered and reports any error of the writes so far.
func (c *CSVWriter) Flush() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}

func csvField(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case *float64:
		if x == nil {
			return ""
		}
		return strconv.FormatFloat(*x, 'g', -1, 64)
	case *int:
		if x == nil {
			return ""
		}
		return strconv.Itoa(*x)
	case *string:
		if x == nil {
			return ""
		}
		return *x
	}
	return fmt.Sprint(v)
}
