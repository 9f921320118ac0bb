package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/passerelle/passerelle/registration"
)

// cmdGenerateRegistration writes a new appservice registration with random tokens, for an external bridge.
// The file goes into appservices.directory so the hub loads it at start.
func cmdGenerateRegistration(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate-registration", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asID := fs.String("id", "", "appservice ID (required)")
	asURL := fs.String("url", "", "URL the homeserver pushes transactions to, e.g. http://127.0.0.1:29318")
	sender := fs.String("sender-localpart", "", "localpart of the appservice's bot (required)")
	userRegex := fs.String("user-regex", "", "exclusive user namespace, e.g. @whatsapp_.*:localhost")
	out := fs.String("o", "", "write the registration to this file (default: standard output)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *asID == "" || *sender == "" {
		return usagef("--id and --sender-localpart are required")
	}
	reg := registration.Generate(*asID, *asURL, *sender, *userRegex)
	if err := reg.Validate(); err != nil {
		return fmt.Errorf("invalid registration: %w", err)
	}
	if *out == "" {
		data, err := reg.Marshal()
		if err != nil {
			return err
		}
		_, err = stdout.Write(data)
		return err
	}
	if err := reg.Save(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s (it holds secret tokens: keep it private)\n", *out)
	return nil
}
