package httpapi

// Route classes: the gateway's rate limits are configured per class
// (Route.Class). A route with no class is ClassRead (ClassAdmin when
// Admin). ClassUpload routes also skip the gateway's JSON content-type
// check, as they take raw bytes.
const (
	ClassAuth   = "auth"   // login, register, refresh: limited per client IP
	ClassRead   = "read"   // GETs
	ClassWrite  = "write"  // state changes
	ClassUpload = "upload" // media uploads: any content type
	ClassAdmin  = "admin"  // operator endpoints
	ClassProbe  = "probe"  // /healthz, /readyz, /metrics: no class limit
)
