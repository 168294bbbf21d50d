// The one translation unit that compiles Asio (BOOST_ASIO_SEPARATE_COMPILATION) and Beast
// (BOOST_BEAST_SEPARATE_COMPILATION), so the other files only include declarations.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
