package api_test

import (
	"context"

	"github.com/sluice-dev/sluice/internal/api"
	"github.com/sluice-dev/sluice/internal/endpoint"
)

// The client is tested through the chat-completions endpoint, the one
// whose wire format these tests speak.
var chat endpoint.Chat

// chatReq is a chat-completions request of body.
func chatReq(body []byte) api.Request {
	return api.Request{Path: chat.Path(), Body: body, Check: chat.Check}
}

// doStream streams body as sluice does: the endpoint asks for the stream
// in the body and assembles the answer.
func doStream(c *api.Client, ctx context.Context, body []byte, opt api.StreamOptions) (*api.Response, api.StreamStats, error) {
	b, err := chat.StreamBody(body)
	if err != nil {
		return nil, api.StreamStats{}, err
	}
	return c.DoStream(ctx, chatReq(b), chat.NewAssembler(), opt)
}
