package email

import (
	"testing"

	"github.com/passerelle/passerelle/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
