package outbox

import "errors"

// ErrInvalidOptions marks every error [New] and [NewRelay] return for a bad option; the message
// names the field.
var ErrInvalidOptions = errors.New("outbox: invalid options")
