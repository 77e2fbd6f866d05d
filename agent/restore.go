package agent

import (
	"context"

	"github.com/haulproject/haul/proto"
)

func (s *session) restore(ctx context.Context) error {
	return coded(proto.CodeRefused, "restore is not implemented by this agent yet")
}
