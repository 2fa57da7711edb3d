package outbox

func isChild() bool { return false }
func runChild()     {}
