package mockapi

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"
)

// Fault names an injected fault kind; it keys Stats.Faults.
type Fault string

// Fault kinds, drawn in this order from one uniform number per request, so
// each kind occurs with exactly its configured probability.
const (
	FaultFail5xx     Fault = "fail_5xx"     // random 500, 502 or 503
	FaultOverload429 Fault = "overload_429" // spurious 429 "overloaded"
	FaultHang        Fault = "hang"         // no answer until the client gives up
	FaultReset       Fault = "reset"        // connection closed without an answer
	FaultMalformed   Fault = "malformed"    // 200 with a truncated JSON body
	FaultQuota       Fault = "quota"        // 429 insufficient_quota
	FaultStreamStall Fault = "stream_stall" // stream stalls after a few chunks
)

// drawFault picks the fault for one request, "" for none. A stream stall
// drawn for a non-streaming request means no fault.
func (s *Server) drawFault(stream bool) Fault {
	probs := s.cfg.faultProbs()
	total := 0.0
	for _, f := range probs {
		total += f.p
	}
	if total == 0 {
		return ""
	}
	u, cum := s.randFloat(), 0.0
	for _, f := range probs {
		cum += f.p
		if u < cum {
			if f.kind == FaultStreamStall && !stream {
				return ""
			}
			return f.kind
		}
	}
	return ""
}

// serveFault answers a request with fault f and reports whether it did;
// resets are left to the caller, malformed and stall faults of streams to
// the streamer.
func (s *Server) serveFault(ctx context.Context, w http.ResponseWriter, r *http.Request, f Fault, stream bool, answer func() any) bool {
	switch f {
	case FaultFail5xx:
		writeError(w, serverError([]int{500, 502, 503}[s.randIntN(3)]))
	case FaultOverload429:
		setRetryAfter(w.Header(), time.Second)
		writeError(w, newError(http.StatusTooManyRequests, "requests", "rate_limit_exceeded", "",
			"The server is currently overloaded with other requests. Please retry after a brief wait."))
	case FaultQuota:
		writeError(w, newError(http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota", "",
			"You exceeded your current quota, please check your plan and billing details."))
	case FaultHang:
		<-ctx.Done()
		abort(r)
	case FaultMalformed:
		if stream {
			return false
		}
		b, _ := json.Marshal(answer())
		writeRaw(w, http.StatusOK, "application/json", b[:1+s.randIntN(len(b)-1)])
	default:
		return false
	}
	return true
}

// serverError is the OpenAI-shaped body of a 5xx answer.
func serverError(status int) *apiError {
	switch status {
	case http.StatusBadGateway:
		return newError(status, "server_error", "bad_gateway", "", "Bad gateway.")
	case http.StatusServiceUnavailable:
		return newError(status, "server_error", "service_unavailable", "", "The engine is currently overloaded, please try again later.")
	default:
		return newError(status, "server_error", "", "", "The server had an error while processing your request. Sorry about that!")
	}
}

// resetConn closes the connection without an answer, with a TCP RST when
// possible. Without a hijackable connection (HTTP/2, recorders) it aborts
// the handler, which makes net/http drop the connection or stream.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// abort ends a handler whose wait was interrupted: silently when the client
// is gone, else (Server.Close) by aborting the connection so that the client
// never mistakes the missing answer for an empty success.
func abort(r *http.Request) {
	if r.Context().Err() != nil {
		return
	}
	panic(http.ErrAbortHandler)
}

// sleep waits d or until ctx ends and reports whether d fully elapsed. A
// non-positive d returns true at once.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
