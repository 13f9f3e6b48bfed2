package record_test

import (
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/record"
)

func ExampleParse() {
	value := []byte(`{"custom_id":"r-1","prompt":"Say hi <b>","system":"Be brief.","max_tokens":16}`)
	req, err := record.Parse(value, record.Options{DefaultModel: "gpt-4o-mini", FallbackID: "prompts-0-42"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(req.Shape, req.CustomID, req.Model, req.Stream)
	fmt.Println(string(req.Body))

	_, err = record.Parse([]byte(`{"messages":[{"role":7,"content":"x"}]}`), record.Options{DefaultModel: "m"})
	fmt.Println(errors.Is(err, record.ErrInvalidInput), err)
	// Output:
	// simple r-1 gpt-4o-mini false
	// {"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi <b>"}],"max_tokens":16}
	// true invalid input: messages[0].role: must be a string, got number
}
