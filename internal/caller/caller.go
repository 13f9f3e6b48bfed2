// Package caller wires sluice's API client and limiter into the
// processor's call chain: API adapts *api.Client to processor.Caller
// (the endpoint of each call picks the path, the answer check, the
// stream assembler and the usage), and Limit is the middleware that runs
// each call under the limiter.
//
//	c := caller.NewAPI(apiClient)
//	p := processor.New(c, processor.Config{
//		Middleware:  []processor.Middleware{caller.Limit(lim)},
//		TokenBudget: lim.TokenBudget,
//	})
package caller

import (
	"context"
	"fmt"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
	"github.com/sluice-dev/sluice/processor"
)

// API is a processor.Caller that calls the API through an *api.Client.
type API struct{ c *api.Client }

// NewAPI returns the Caller of c.
func NewAPI(c *api.Client) API { return API{c: c} }

// Call implements processor.Caller: one attempt at the call's endpoint,
// streamed when c.Stream is set and the endpoint streams. Its errors are
// api's (see api.Client.Do and DoStream).
func (a API) Call(ctx context.Context, c *processor.Call) (*processor.Answer, error) {
	ep, ok := endpoint.Lookup(c.URL)
	if !ok {
		return nil, fmt.Errorf("caller: no endpoint %q", c.URL)
	}
	req := api.Request{Path: ep.Path(), Body: c.Body, Check: ep.Check}
	var resp *api.Response
	var st api.StreamStats
	var err error
	if s, ok := ep.(endpoint.Streamer); ok && c.Stream {
		if req.Body, err = s.StreamBody(c.Body); err != nil {
			return nil, fmt.Errorf("%w: %w", api.ErrMalformed, err)
		}
		opt := api.StreamOptions{IdleTimeout: c.IdleTimeout}
		if c.OnDelta != nil {
			opt.OnDelta = func(d api.Delta) {
				c.OnDelta(processor.Delta{Type: d.Type, Index: d.Index, Data: d.Data, FinishReason: d.FinishReason, Token: d.Token})
			}
		}
		resp, st, err = a.c.DoStream(ctx, req, s.NewAssembler(), opt)
	} else {
		resp, err = a.c.Do(ctx, req)
	}
	if resp == nil {
		return nil, err
	}
	ans := &processor.Answer{StatusCode: resp.StatusCode, RequestID: resp.RequestID, Header: resp.Header, Body: resp.Body, TTFT: st.TTFT}
	if err == nil {
		if u, ok := ep.Usage(resp.Body); ok {
			ans.Usage = &processor.Usage{Input: u.Input, Output: u.Output, Reasoning: u.Reasoning, Total: u.Total}
		}
	}
	return ans, err
}
