#include "tokenbouncer/upstream/credential.hpp"
