package auth

// DeviceSignedIn reports whether uid's device, whose push registration
// the sign-in session `session` made (its ID; "" for an access token
// minted outside a session), is signed in: that session is live, or a
// live session of uid named the device when it signed in. The push
// bridge asks it before each push, so that a registration that outlived
// its session's sign-out (made with the session's access token, still
// valid, after the sign-out removed the device's registration; or left
// when the removal failed) brings the signed-out device nothing.
func (s *Service) DeviceSignedIn(uid, device, session string) (bool, error) {
	if session == "" {
		return true, nil
	}
	sessions, err := s.allSessions(uid, "")
	if err != nil {
		return false, err
	}
	for _, sess := range sessions {
		if sess.ID == session || (device != "" && sess.Device == device) {
			return true, nil
		}
	}
	return false, nil
}
