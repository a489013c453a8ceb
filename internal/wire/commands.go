package wire

// Type bytes of the commands replicated through the Raft log. Each owner
// registers a handler for its types with the FSM; a node that does not
// know a type skips it, so that rolling upgrades work. Never reuse a
// number.
const (
	CmdNodeRegister byte = 0x01 // cluster: assign a snowflake machine number to a node name

	CmdAccountCreate byte = 0x10 // auth: a new account
	CmdRefreshIssue  byte = 0x11 // auth: a new refresh-token family or its rotation
	CmdRefreshRevoke byte = 0x12 // auth: revoke a refresh-token family (reuse detected)
	CmdAccountUpdate byte = 0x13 // auth: roles, password
	CmdSigningKey    byte = 0x14 // auth: publish a node's public token-signing key to the cluster

	CmdProfilePut byte = 0x20 // users: create or update a profile

	CmdMessage    byte = 0x30 // archive: a chat message
	CmdReadCursor byte = 0x31 // archive: a read receipt moves a read cursor
)
