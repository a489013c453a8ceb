package wire

// Type bytes of the commands replicated through the Raft log. Each owner
// registers a handler for its types with the FSM; a node that does not
// know a type skips it, so that rolling upgrades work. Never reuse a
// number.
const (
	CmdNodeRegister byte = 0x01 // cluster: assign a snowflake machine number to a node name
	CmdNodeDown     byte = 0x02 // cluster: the leader marks a member down (no answer for DownAfter) or up again (cluster/down.go)
	CmdFeatureLevel byte = 0x03 // cluster: the leader raises the cluster's feature level once every member supports it (cluster/featurelevel)

	CmdAccountCreate    byte = 0x10 // auth: a new account
	CmdRefreshIssue     byte = 0x11 // auth: a new refresh-token family or its rotation
	CmdRefreshRevoke    byte = 0x12 // auth: revoke a refresh-token family (reuse detected)
	CmdAccountUpdate    byte = 0x13 // auth: roles, password
	CmdSigningKey       byte = 0x14 // auth: publish a node's public token-signing key to the cluster
	CmdAccountDelete    byte = 0x15 // auth: an account asked to be deleted: disabled now, erased after the grace period
	CmdAccountErase     byte = 0x16 // auth (with users, push, media, archive): one bounded step of erasing a deleted account
	CmdIdentitySignIn   byte = 0x17 // auth: a federated (OIDC) sign-in: link (issuer, subject) to an account, creating it on first sign-in
	CmdOIDCLogin        byte = 0x18 // auth/idp: a browser code-flow login started (state, nonce, PKCE verifier) or finished (the state is spent)
	CmdRefreshRevokeAll byte = 0x19 // auth: revoke every refresh-token family of a user (sign out everywhere), one bounded step
	CmdSigningKeyRevoke byte = 0x1A // auth: a token-signing key stops verifying (revoked now, or retired by a rotation at a later time)
	CmdAuthPrune        byte = 0x1B // auth: one bounded step of removing refresh-token families expired or revoked a day ago
	CmdRemoteErase      byte = 0x1C // auth: a user of another region was erased there (its region's link told us): erased here too, at once, by the erasure steps

	CmdProfilePut  byte = 0x20 // users: create or update a profile
	CmdContact     byte = 0x21 // users: add or remove a contact
	CmdBlock       byte = 0x22 // users: block or unblock a user
	CmdGroupCreate byte = 0x23 // users: a new group with its first members
	CmdGroupUpdate byte = 0x24 // users: name, avatar, description
	CmdGroupMember byte = 0x25 // users: add, remove or change the role of a member
	CmdGroupOwner  byte = 0x26 // users: transfer ownership
	CmdGroupMirror byte = 0x29 // users: the state of a group of another region, as its home region's link brought it (issue 14)
	CmdGroupLeave  byte = 0x2A // users: a user of this region leaves a group of another region: out of the mirror, the request staged for the home (issue 14)
	CmdUserIndex   byte = 0x2E // users: a step of the leader's walk indexing contacts and blocks by their target (services/users/relindex.go)

	CmdMessage       byte = 0x30 // archive: a chat message
	CmdReadCursor    byte = 0x31 // archive: a read receipt moves a read cursor
	CmdSegmentSealed byte = 0x32 // archive: a conversation's oldest messages moved into a sealed segment (issue 11)
	CmdRetention     byte = 0x33 // archive: a conversation's messages below a cutoff expire, in both tiers (issue 11)
	CmdRetentionRefs byte = 0x34 // archive: the dedupe keys (and sealed messages' unread counts) of messages that retention expires
	CmdRetentionPtrs byte = 0x35 // archive: the m/ pointers of sealed messages that retention expires
	CmdArchiveOwner  byte = 0x36 // archive: the cluster's owner ID of the objects it puts in a shared segment store (feature level 2)

	CmdRouteAdd       byte = 0x40 // broker: a node has its first local subscriber of a filter
	CmdRouteDel       byte = 0x41 // broker: a node lost its last local subscriber of a filter
	CmdRoutesDropNode byte = 0x42 // broker: remove every route of a node (it left or was removed)

	CmdPushDevicePut  byte = 0x50 // push: register or refresh a device (a token held by another user moves)
	CmdPushDeviceDel  byte = 0x51 // push: remove a device's registration (by device, or by a dead token)
	CmdPushMute       byte = 0x52 // push: mute or unmute a conversation for a user
	CmdPushSettings   byte = 0x53 // push: a change of a user's push preferences (preview, do-not-disturb window)
	CmdPushVAPID      byte = 0x54 // push: the cluster's Web Push (VAPID) key pair; the first proposal wins
	CmdPushGroupOptIn byte = 0x55 // push: a user opts in to (or out of) every message of a large group
	CmdPushProgress   byte = 0x56 // push: devices handled for queued messages, and messages done (the outbox)
	CmdPushUnacked    byte = 0x57 // push: a connected device did not acknowledge a queued message's delivery in time (pushed as if offline)

	CmdMediaCreate     byte = 0x60 // media: a new upload (counts the uploader's daily quota)
	CmdMediaUploaded   byte = 0x61 // media: the upload's bytes are in the raw tier: queue its processing job
	CmdMediaClaim      byte = 0x62 // media: a worker claims, renews or releases a processing job (lease)
	CmdMediaDone       byte = 0x63 // media: the claim in force ends the job: ready with its metadata, or rejected
	CmdMediaGrant      byte = 0x64 // media: users or groups may read it (it was sent to them)
	CmdMediaTouch      byte = 0x65 // media: last read time, or the tier it moved to
	CmdMediaDelete     byte = 0x66 // media: records removed (orphans, deleted accounts)
	CmdMediaExpire     byte = 0x67 // media: retention expired a conversation's messages: its grants last sent before the cutoff go (issue 11)
	CmdMediaRemote     byte = 0x68 // media: a media of another region arrived in a message: its record here (not fetched yet) and its grant (issue 14)
	CmdMediaFetched    byte = 0x69 // media: the bytes of another region's media are in this region's store (issue 14)
	CmdMediaIndex      byte = 0x6A // media: a step of the leader's walk indexing records and grants by user (services/media/index.go)
	CmdMediaDropUnsent byte = 0x6B // media: the sweeper removes the records of uploads still unsent, each only if it still is, leaving tombstones for their files (services/media/lifecycle.go)

	CmdRegionCursor byte = 0x70 // region links: a link's outbox position acknowledged by the other region (bridge/region, issue 14)

	CmdPresenceSeen byte = 0x80 // presence: users' last seen, batched (kept across restarts of the whole cluster)
)

// Contacts and blocks across regions, and messages another region
// refused for good (issue 14: services/users relations_remote.go,
// services/archive undeliverable.go, bridge/region notices.go).
const (
	CmdRemoteRelation byte = 0x2D // users: a contact or block a user of another region made about a user of this one, as the link brought it
	CmdUndeliverable  byte = 0x3A // archive: another region refused a direct message of ours for good: its status
	CmdRegionNotice   byte = 0x7A // region links: a notice staged for another region's outbox (an undeliverable message)
	CmdRegionExpire   byte = 0x7B // region links: messages of an outbox expired by --link-retention behind an entry that is not a message, deleted by position
)

// Client registry (broker/registry): which node holds each client ID.
const (
	CmdClientRegister  byte = 0x43 // broker: a client's session was established on a node (session takeover across nodes)
	CmdClientWithdraw  byte = 0x44 // broker: a client's connection on a node ended (only if the entry still names that connection)
	CmdClientsDropNode byte = 0x45 // broker: remove every registry entry of a node (it left or was removed)
)
