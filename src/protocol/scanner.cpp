#include "tokenbouncer/protocol/scanner.hpp"
// The scanner is a template (it sits on the relay hot path); this file checks the header compiles alone.
