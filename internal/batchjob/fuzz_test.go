package batchjob

import "testing"

// FuzzDecodeJobRecord feeds jobs topic values (written by any build, or
// by anyone with write access to the topic) to both decoders: they never
// panic, and what they accept encodes and decodes to itself.
func FuzzDecodeJobRecord(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"job":"j-1","api":"xai","endpoint":"/v1/chat/completions","model":"grok-4","step":"submitted","chunks":2,"requests":3,"batch_id":"b","added":[0],"adding":1,"total_before":2}`,
		`{"v":1,"job":"j-1","seq":0,"requests":[{"id":"t-0-1","custom_id":"c","topic":"t","partition":0,"offset":1,"key":null,"value":"e30="}]}`,
		`{"v":2}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if j, err := DecodeJob(b); err == nil {
			enc, err := Encode(j)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeJob(enc); err != nil {
				t.Fatalf("a decoded job does not decode again: %v", err)
			}
		}
		if s, err := DecodeSeal(b); err == nil {
			enc, err := Encode(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeSeal(enc); err != nil {
				t.Fatalf("a decoded seal does not decode again: %v", err)
			}
		}
		if c, err := DecodeChunk(b); err == nil {
			enc, err := Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeChunk(enc); err != nil {
				t.Fatalf("a decoded chunk does not decode again: %v", err)
			}
		}
	})
}
