// message_scanner: the relay's stream scanner. The tests drive it as the relay does: read into a
// buffer of `capacity` bytes, scan, forward `consumed` bytes, keep the rest at the front.

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "test_helpers.hpp"
#include "tokenbouncer/protocol/scanner.hpp"

using namespace tokenbouncer::protocol;
using tb_test::be32;
using tb_test::typed_filled;
using tb_test::typed_raw;

namespace {

using header = std::pair<char, std::uint32_t>;  // (type, total)

struct seen_message
{
    char type;
    std::uint32_t total;
    std::string bytes;      // what the handler was shown
    std::size_t offset;     // where the message starts in the whole stream
};

std::size_t header_only(char, std::uint32_t) { return 5; }
std::size_t whole(char, std::uint32_t total) { return total; }

// The relay's loop around the scanner.
struct relay
{
    explicit relay(std::size_t capacity_, std::function<std::size_t(char, std::uint32_t)> need_,
                   std::function<scan_action(char, std::uint32_t)> decide_ = nullptr,
                   std::uint32_t max_length = max_message_length)
        : scanner(max_length), capacity(capacity_), need(std::move(need_)), decide(std::move(decide_))
    {
    }

    message_scanner scanner;
    std::size_t capacity;
    std::function<std::size_t(char, std::uint32_t)> need;
    std::function<scan_action(char, std::uint32_t)> decide;  // nullptr: always next
    std::string buf;
    std::string forwarded;
    std::vector<seen_message> seen;
    std::size_t max_held = 0;
    int scans = 0;

    // Reads as much of `chunk` as fits in the buffer, then scans until no progress.
    // Returns how many bytes of `chunk` were taken.
    std::size_t feed(std::string_view chunk)
    {
        std::size_t room = capacity - buf.size();
        std::size_t n = std::min(room, chunk.size());
        buf.append(chunk.substr(0, n));
        max_held = std::max(max_held, buf.size());
        for (;;)
        {
            ++scans;
            auto res = scanner.scan(buf, capacity, need, [&](char t, std::uint32_t total, std::string_view bytes) {
                std::size_t off = forwarded.size() + static_cast<std::size_t>(bytes.data() - buf.data());
                seen.push_back({t, total, std::string(bytes), off});
                return decide ? decide(t, total) : scan_action::next;
            });
            // Plain ifs, not REQUIRE: this runs hundreds of thousands of times per test.
            if (res.invalid)
                FAIL("invalid length " << res.invalid_length << " for type '" << res.invalid_type << "'");
            if (res.consumed > buf.size())
                FAIL("consumed " << res.consumed << " of " << buf.size() << " bytes");
            forwarded.append(buf, 0, res.consumed);
            buf.erase(0, res.consumed);
            // stop_after: the caller forwards what was consumed and carries on.
            if (!res.stopped || res.consumed == 0 || buf.empty())
                break;
        }
        return n;
    }

    // Feeds the whole stream in chunks whose sizes come from next_chunk().
    void run(std::string_view stream, const std::function<std::size_t()>& next_chunk)
    {
        std::size_t pos = 0;
        while (pos < stream.size())
        {
            std::size_t want = std::max<std::size_t>(1, next_chunk());
            std::size_t took = feed(stream.substr(pos, want));
            if (took == 0)
                FAIL("the buffer is full and the scanner consumes nothing: the relay would hang (held "
                     << buf.size() << " of " << capacity << ")");
            pos += took;
        }
    }

    std::vector<header> headers() const
    {
        std::vector<header> h;
        for (const auto& s : seen)
            h.emplace_back(s.type, s.total);
        return h;
    }
};

struct test_stream
{
    std::string bytes;
    std::vector<header> headers;
    std::vector<std::size_t> starts;

    void add(char type, std::size_t body_len, char fill = 'x')
    {
        starts.push_back(bytes.size());
        bytes += typed_filled(type, body_len, fill);
        headers.emplace_back(type, static_cast<std::uint32_t>(body_len + 5));
    }
    void add_raw(char type, std::string_view body)
    {
        starts.push_back(bytes.size());
        bytes += typed_raw(type, body);
        headers.emplace_back(type, static_cast<std::uint32_t>(body.size() + 5));
    }
};

}  // namespace

TEST_CASE("scanner: several whole messages in one buffer", "[scanner]")
{
    test_stream s;
    s.add_raw('T', std::string(20, 't'));
    s.add_raw('D', "");
    s.add_raw('D', "1234567");
    s.add_raw('C', "SELECT 2\0");
    s.add_raw('Z', "I");

    message_scanner sc;
    std::vector<header> got;
    std::vector<std::string> bytes_seen;
    auto res = sc.scan(s.bytes, 65536, header_only, [&](char t, std::uint32_t total, std::string_view b) {
        got.emplace_back(t, total);
        bytes_seen.emplace_back(b);
        return scan_action::next;
    });
    CHECK(res.consumed == s.bytes.size());
    CHECK_FALSE(res.stopped);
    CHECK_FALSE(res.invalid);
    CHECK(got == s.headers);
    CHECK(sc.at_boundary());
    CHECK(sc.remaining() == 0);
    // Whole messages in the buffer are shown whole, starting at their type byte.
    REQUIRE(bytes_seen.size() == 5);
    for (std::size_t i = 0; i < 5; ++i)
        CHECK(bytes_seen[i] == s.bytes.substr(s.starts[i], s.headers[i].second));
}

TEST_CASE("scanner: empty buffer and partial headers", "[scanner]")
{
    message_scanner sc;
    int calls = 0;
    auto h = [&](char, std::uint32_t, std::string_view) {
        ++calls;
        return scan_action::next;
    };
    CHECK(sc.scan("", 64, header_only, h).consumed == 0);
    std::string msg = typed_raw('Z', "I");
    for (std::size_t n = 1; n < 5; ++n)
    {
        INFO("header bytes: " << n);
        auto res = sc.scan(std::string_view(msg).substr(0, n), 64, header_only, h);
        CHECK(res.consumed == 0);
        CHECK_FALSE(res.stopped);
        CHECK(sc.at_boundary());
    }
    CHECK(calls == 0);
}

TEST_CASE("scanner: a stream split at every byte offset across two scan() calls", "[scanner]")
{
    test_stream s;
    s.add('T', 20);
    s.add('D', 0);
    s.add('D', 7);
    s.add('C', 13);
    s.add('Z', 1);
    const std::string& stream = s.bytes;
    std::vector<std::size_t> bounds = s.starts;
    bounds.push_back(stream.size());

    struct
    {
        const char* name;
        std::size_t (*need)(char, std::uint32_t);
    } modes[] = {{"header only", header_only}, {"whole messages", whole}};

    for (const auto& mode : modes)
    {
        SECTION(mode.name)
        {
            for (std::size_t k = 0; k <= stream.size(); ++k)
            {
                INFO("mode " << mode.name << ", cut at " << k << " of " << stream.size());
                // Message i is the one the cut falls into (or the end of the stream).
                std::size_t i = 0;
                while (i + 1 < bounds.size() && bounds[i + 1] <= k)
                    ++i;
                std::size_t start = bounds[i];
                std::size_t expected_consumed1;
                std::uint64_t expected_remaining = 0;
                std::size_t expected_seen1;  // headers shown by the first call
                if (k == stream.size() || k == start)
                {
                    expected_consumed1 = k;
                    expected_seen1 = i;
                }
                else if (mode.need == header_only && k - start >= 5)
                {
                    expected_consumed1 = k;  // body partly here: consumed, the rest skipped later
                    expected_remaining = bounds[i + 1] - k;
                    expected_seen1 = i + 1;
                }
                else
                {
                    expected_consumed1 = start;  // partial header (or partial wanted message) kept
                    expected_seen1 = i;
                }

                message_scanner sc;
                std::vector<header> got;
                auto h = [&](char t, std::uint32_t total, std::string_view b) {
                    got.emplace_back(t, total);
                    if (mode.need == whole)
                        CHECK(b.size() == total);
                    else
                        CHECK(b.size() >= 5);
                    return scan_action::next;
                };
                std::string part1 = stream.substr(0, k);
                auto r1 = sc.scan(part1, 65536, mode.need, h);
                CHECK(r1.consumed == expected_consumed1);
                CHECK(sc.remaining() == expected_remaining);
                CHECK(got.size() == expected_seen1);

                std::string part2 = part1.substr(r1.consumed) + stream.substr(k);
                auto r2 = sc.scan(part2, 65536, mode.need, h);
                CHECK(r2.consumed == part2.size());
                CHECK(r1.consumed + r2.consumed == stream.size());
                CHECK_FALSE(r2.stopped);
                CHECK(sc.at_boundary());
                CHECK(got == s.headers);  // each header exactly once, in order
            }
        }
    }
}

TEST_CASE("scanner: a 1 MiB body skipped through a 64 KiB buffer", "[scanner]")
{
    test_stream s;
    s.add('T', 30);
    s.add('D', 1 << 20, 'd');
    s.add('C', 13);
    s.add('Z', 1);
    const std::size_t capacity = 64 * 1024;

    struct
    {
        const char* name;
        std::size_t chunk;
    } chunkings[] = {{"4096-byte reads", 4096}, {"1000-byte reads", 1000}, {"full-buffer reads", capacity},
                     {"7-byte reads", 7}};
    for (const auto& c : chunkings)
    {
        SECTION(c.name)
        {
            // The relay wants small messages whole, DataRow header-only.
            relay r(capacity, [](char t, std::uint32_t total) -> std::size_t { return t == 'D' ? 5 : total; });
            std::size_t big_message_scans_with_remaining = 0;
            std::size_t pos = 0;
            while (pos < s.bytes.size())
            {
                std::size_t took = r.feed(std::string_view(s.bytes).substr(pos, c.chunk));
                REQUIRE(took > 0);
                pos += took;
                if (r.scanner.remaining() > 0)
                    ++big_message_scans_with_remaining;
            }
            CHECK(r.headers() == s.headers);
            CHECK(r.forwarded == s.bytes);
            CHECK(r.buf.empty());
            CHECK(r.scanner.at_boundary());
            CHECK(r.max_held <= capacity);
            CHECK(big_message_scans_with_remaining > 0);  // the body was really skipped in pieces
            REQUIRE(r.seen.size() == 4);
            CHECK(r.seen[1].type == 'D');
            CHECK(r.seen[1].total == (1u << 20) + 5);
            CHECK(r.seen[1].bytes.size() >= 5);
            CHECK(r.seen[1].bytes.size() <= capacity);
            CHECK(r.seen[1].bytes == s.bytes.substr(s.starts[1], r.seen[1].bytes.size()));
            // The others were shown whole.
            for (std::size_t i : {0u, 2u, 3u})
                CHECK(r.seen[i].bytes == s.bytes.substr(s.starts[i], s.headers[i].second));
        }
    }
}

TEST_CASE("scanner: need() for the whole message keeps it in the buffer until complete", "[scanner]")
{
    std::string z = typed_raw('Z', "I");
    std::string e = typed_raw('E', std::string("SERROR\0C42601\0Msyntax error\0\0", 30));
    std::string stream = z + e;
    // ReadyForQuery and ErrorResponse wanted whole (as the relay does to read them).
    auto need = [](char t, std::uint32_t total) -> std::size_t { return t == 'E' || t == 'Z' ? total : 5; };

    for (std::size_t n = 0; n < stream.size(); ++n)
    {
        INFO("bytes available: " << n);
        message_scanner sc;  // each prefix as the first read of a fresh stream
        std::vector<std::string> shown;
        auto res = sc.scan(std::string_view(stream).substr(0, n), 65536, need,
                           [&](char, std::uint32_t, std::string_view b) {
                               shown.emplace_back(b);
                               return scan_action::next;
                           });
        if (n < z.size())
        {
            CHECK(res.consumed == 0);
            CHECK(shown.empty());
        }
        else
        {
            // Z is consumed, E is kept whole at the front of the buffer.
            CHECK(res.consumed == z.size());
            REQUIRE(shown.size() == 1);
            CHECK(shown[0] == z);
        }
        CHECK(sc.at_boundary());
    }
    // With all the bytes, E is shown whole.
    message_scanner sc;
    std::vector<std::string> shown;
    auto res = sc.scan(stream, 65536, need, [&](char, std::uint32_t, std::string_view b) {
        shown.emplace_back(b);
        return scan_action::next;
    });
    CHECK(res.consumed == stream.size());
    REQUIRE(shown.size() == 2);
    CHECK(shown[1] == e);
}

TEST_CASE("scanner: need() larger than the message is clamped to its total", "[scanner]")
{
    // A handler that asks for "up to 4 KiB" of every message still sees a 6-byte message once it
    // is complete, not only once 4 KiB have arrived.
    std::string z = typed_raw('Z', "I");
    message_scanner sc;
    std::vector<std::string> shown;
    auto res = sc.scan(z, 65536, [](char, std::uint32_t) -> std::size_t { return 4096; },
                       [&](char, std::uint32_t, std::string_view b) {
                           shown.emplace_back(b);
                           return scan_action::next;
                       });
    CHECK(res.consumed == z.size());
    REQUIRE(shown.size() == 1);
    CHECK(shown[0] == z);
}

TEST_CASE("scanner: a message needing more than capacity is shown header-only", "[scanner]")
{
    std::string big = typed_filled('E', 95);  // total 100
    REQUIRE(big.size() == 100);
    const std::size_t capacity = 64;

    SECTION("just the header available")
    {
        message_scanner sc;
        std::vector<std::pair<std::uint32_t, std::string>> shown;
        auto res = sc.scan(std::string_view(big).substr(0, 5), capacity, whole,
                           [&](char, std::uint32_t total, std::string_view b) {
                               shown.emplace_back(total, std::string(b));
                               return scan_action::next;
                           });
        REQUIRE(shown.size() == 1);
        CHECK(shown[0].first == 100);
        CHECK(shown[0].second == big.substr(0, 5));
        CHECK(res.consumed == 5);
        CHECK(sc.remaining() == 95);
    }
    SECTION("part of the body available")
    {
        message_scanner sc;
        std::vector<std::string> shown;
        auto res = sc.scan(std::string_view(big).substr(0, 30), capacity, whole,
                           [&](char, std::uint32_t, std::string_view b) {
                               shown.emplace_back(b);
                               return scan_action::next;
                           });
        REQUIRE(shown.size() == 1);
        CHECK(shown[0] == big.substr(0, 30));
        CHECK(res.consumed == 30);
        CHECK(sc.remaining() == 70);
        // The rest is skipped, not shown again.
        auto res2 = sc.scan(std::string_view(big).substr(30), capacity, whole, [&](char, std::uint32_t, std::string_view b) {
            shown.emplace_back(b);
            return scan_action::next;
        });
        CHECK(res2.consumed == 70);
        CHECK(shown.size() == 1);
        CHECK(sc.at_boundary());
    }
    SECTION("a message of exactly capacity bytes is still kept whole")
    {
        std::string fits = typed_filled('E', capacity - 5);
        message_scanner sc;
        int calls = 0;
        auto h = [&](char, std::uint32_t, std::string_view b) {
            ++calls;
            CHECK(b.size() == capacity);
            return scan_action::next;
        };
        auto res = sc.scan(std::string_view(fits).substr(0, capacity - 1), capacity, whole, h);
        CHECK(res.consumed == 0);
        CHECK(calls == 0);
        res = sc.scan(fits, capacity, whole, h);
        CHECK(res.consumed == capacity);
        CHECK(calls == 1);
    }
    SECTION("the relay loop passes it through without hanging")
    {
        relay r(capacity, whole);
        r.run(big + typed_raw('Z', "I"), [] { return std::size_t{64}; });
        CHECK(r.forwarded == big + typed_raw('Z', "I"));
        CHECK(r.headers() == std::vector<header>{{'E', 100}, {'Z', 6}});
    }
}

TEST_CASE("scanner: stop_before and stop_after", "[scanner]")
{
    std::string a = typed_raw('C', std::string("SELECT 1\0", 9));
    std::string b = typed_raw('Z', "I");
    std::string c = typed_raw('D', "rowdata");
    std::string stream = a + b + c;

    SECTION("stop_before: the message is not consumed and is shown again next time")
    {
        message_scanner sc;
        std::vector<char> types;
        auto res = sc.scan(stream, 65536, header_only, [&](char t, std::uint32_t, std::string_view) {
            types.push_back(t);
            return t == 'Z' ? scan_action::stop_before : scan_action::next;
        });
        CHECK(res.stopped);
        CHECK_FALSE(res.invalid);
        CHECK(res.consumed == a.size());
        CHECK(types == std::vector<char>{'C', 'Z'});
        CHECK(sc.at_boundary());
        // Scanning the rest starts again at Z.
        types.clear();
        auto res2 = sc.scan(std::string_view(stream).substr(res.consumed), 65536, header_only,
                            [&](char t, std::uint32_t, std::string_view) {
                                types.push_back(t);
                                return scan_action::next;
                            });
        CHECK(res2.consumed == b.size() + c.size());
        CHECK(types == std::vector<char>{'Z', 'D'});
    }
    SECTION("stop_before on the first message consumes nothing")
    {
        message_scanner sc;
        auto res = sc.scan(stream, 65536, header_only,
                           [&](char, std::uint32_t, std::string_view) { return scan_action::stop_before; });
        CHECK(res.stopped);
        CHECK(res.consumed == 0);
    }
    SECTION("stop_before on a partial message keeps it all and skips nothing")
    {
        message_scanner sc;
        std::string partial = a + c.substr(0, 8);
        auto res = sc.scan(partial, 65536, header_only, [&](char t, std::uint32_t, std::string_view) {
            return t == 'D' ? scan_action::stop_before : scan_action::next;
        });
        CHECK(res.stopped);
        CHECK(res.consumed == a.size());
        CHECK(sc.at_boundary());
    }
    SECTION("stop_after: the message is consumed, the rest is not")
    {
        message_scanner sc;
        std::vector<char> types;
        auto res = sc.scan(stream, 65536, header_only, [&](char t, std::uint32_t, std::string_view) {
            types.push_back(t);
            return t == 'Z' ? scan_action::stop_after : scan_action::next;
        });
        CHECK(res.stopped);
        CHECK(res.consumed == a.size() + b.size());
        CHECK(types == std::vector<char>{'C', 'Z'});
        CHECK(sc.at_boundary());
    }
    SECTION("stop_after on a partial message consumes what is here and skips the rest later")
    {
        message_scanner sc;
        std::string first = a + c.substr(0, 8);
        std::vector<char> types;
        auto h = [&](char t, std::uint32_t, std::string_view) {
            types.push_back(t);
            return t == 'D' ? scan_action::stop_after : scan_action::next;
        };
        auto res = sc.scan(first, 65536, header_only, h);
        CHECK(res.stopped);
        CHECK(res.consumed == first.size());
        CHECK(sc.remaining() == c.size() - 8);
        std::string second = c.substr(8) + b;
        auto res2 = sc.scan(second, 65536, header_only, h);
        CHECK_FALSE(res2.stopped);
        CHECK(res2.consumed == second.size());
        CHECK(types == std::vector<char>{'C', 'D', 'Z'});
        CHECK(sc.at_boundary());
    }
}

TEST_CASE("scanner: invalid lengths are reported with type and length", "[scanner]")
{
    struct
    {
        const char* name;
        std::uint32_t max_length;
        std::uint32_t length;
        bool invalid;
    } cases[] = {
        {"length 0", max_message_length, 0, true},
        {"length 3", max_message_length, 3, true},
        {"length 4 is fine", max_message_length, 4, false},
        {"length at max_length is fine", 1000, 1000, false},
        {"length max_length + 1", 1000, 1001, true},
        {"length 0xffffffff", max_message_length, 0xffffffffu, true},
        {"length 0x80000000", max_message_length, 0x80000000u, true},
    };
    std::string good = typed_raw('Z', "I");
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            message_scanner sc(c.max_length);
            std::string stream = good + "D" + be32(c.length);
            std::vector<char> types;
            auto res = sc.scan(stream, 65536, header_only, [&](char t, std::uint32_t, std::string_view) {
                types.push_back(t);
                return scan_action::next;
            });
            CHECK(res.invalid == c.invalid);
            if (c.invalid)
            {
                CHECK(res.invalid_type == 'D');
                CHECK(res.invalid_length == c.length);
                CHECK(res.consumed == good.size());  // the valid message before it is still forwarded
                CHECK(types == std::vector<char>{'Z'});
            }
            else
            {
                CHECK(types == std::vector<char>{'Z', 'D'});
                CHECK(res.consumed == stream.size());
            }
        }
    }
}

TEST_CASE("scanner: reset() forgets a partly skipped body", "[scanner]")
{
    message_scanner sc;
    std::string big = typed_filled('D', 100);
    auto res = sc.scan(std::string_view(big).substr(0, 10), 65536, header_only,
                       [](char, std::uint32_t, std::string_view) { return scan_action::next; });
    CHECK(res.consumed == 10);
    CHECK(sc.remaining() == 95);
    CHECK_FALSE(sc.at_boundary());
    sc.reset();
    CHECK(sc.at_boundary());
    std::vector<char> types;
    sc.scan(typed_raw('Z', "I"), 65536, header_only, [&](char t, std::uint32_t, std::string_view) {
        types.push_back(t);
        return scan_action::next;
    });
    CHECK(types == std::vector<char>{'Z'});
}

TEST_CASE("scanner: random message sequences cut at random points", "[scanner][random]")
{
    const char types[] = "DTCZESNKA123dcnsItvGHW";
    for (std::uint32_t seed = 1; seed <= 300; ++seed)
    {
        std::mt19937 rng(seed);
        auto uniform = [&](std::size_t lo, std::size_t hi) {
            return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
        };
        test_stream s;
        std::size_t count = uniform(1, 40);
        for (std::size_t i = 0; i < count; ++i)
        {
            char t = types[uniform(0, sizeof(types) - 2)];
            std::size_t kind = uniform(0, 99);
            std::size_t len = kind < 60 ? uniform(0, 20) : kind < 95 ? uniform(21, 3000) : uniform(3001, 150000);
            s.add(t, len, static_cast<char>('a' + uniform(0, 25)));
        }
        const std::size_t capacities[] = {32, 64, 256, 4096, 65536};
        std::size_t capacity = capacities[uniform(0, 4)];
        const std::size_t max_chunks[] = {1, 3, 17, 500, 70000};
        std::size_t max_chunk = max_chunks[uniform(0, 4)];
        if (s.bytes.size() / max_chunk > 200000)
            max_chunk = s.bytes.size() / 200000 + 1;  // keep the test fast
        bool use_stop_after = uniform(0, 1) == 1;

        INFO("seed " << seed << ", " << count << " messages, " << s.bytes.size() << " bytes, capacity " << capacity
                     << ", chunks up to " << max_chunk << (use_stop_after ? ", stop_after" : ""));

        // ErrorResponse, ReadyForQuery, ParameterStatus and BackendKeyData wanted whole, the rest header-only.
        auto need = [](char t, std::uint32_t total) -> std::size_t {
            return (t == 'E' || t == 'Z' || t == 'S' || t == 'K') ? total : 5;
        };
        std::mt19937 decide_rng(seed * 7919u);
        std::function<scan_action(char, std::uint32_t)> decide;
        if (use_stop_after)
            decide = [&](char, std::uint32_t) {
                return std::uniform_int_distribution<int>(0, 2)(decide_rng) == 0 ? scan_action::stop_after
                                                                                : scan_action::next;
            };
        relay r(capacity, need, decide);
        r.run(s.bytes, [&] { return uniform(1, max_chunk); });

        CHECK(r.headers() == s.headers);
        CHECK(r.forwarded.size() == s.bytes.size());
        CHECK(r.forwarded == s.bytes);
        CHECK(r.buf.empty());
        CHECK(r.scanner.at_boundary());
        CHECK(r.max_held <= capacity);
        // What the handler saw is the stream at the message's offset, and at least what it needed.
        REQUIRE(r.seen.size() == s.headers.size());
        for (std::size_t i = 0; i < r.seen.size(); ++i)
        {
            const auto& m = r.seen[i];
            INFO("message " << i << " '" << m.type << "' total " << m.total);
            CHECK(m.offset == s.starts[i]);
            CHECK(m.bytes == s.bytes.substr(s.starts[i], m.bytes.size()));
            std::size_t wanted = std::min<std::size_t>(need(m.type, m.total), m.total);
            if (wanted > capacity)
                wanted = 5;
            CHECK(m.bytes.size() >= wanted);
            CHECK(m.bytes.size() <= m.total);
        }
    }
}
