package process

import "testing"

// Windows drops the dots and spaces that end a file name when it saves
// it, so "run.bat." downloads as run.bat and runs on a double click: the
// name ends in a script extension and is refused as the plain one is.
func TestDetectScriptNameWithTrailingDotsOrSpaces(t *testing.T) {
	for _, name := range []string{"run.bat.", "run.bat..", "run.cmd .", "invoice.vbs. .", "setup.ps1 ."} {
		_, err := detectBytes(Config{}, []byte("del /q C:\\Users\\*\r\n"), name, "text/plain")
		if Reason(err) != "executable" {
			t.Errorf("%q: err = %v (reason %q), want executable", name, err, Reason(err))
		}
	}
	// A name that only ends in dots is no script.
	if _, err := detectBytes(Config{}, []byte("plain words\n"), "notes...", "text/plain"); err != nil {
		t.Errorf("notes...: %v", err)
	}
}
