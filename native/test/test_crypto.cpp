// Known-answer tests of native/core/crypto.h (built only where OpenSSL is: CMakeLists.txt): the published vectors
// of AES-256-GCM (McGrew-Viega test cases 13, 14, 16), X25519 (RFC 7748 section 6.1) and HKDF-SHA256 (RFC 5869
// test cases 1 and 3), then what the data plane relies on: a flipped bit, another counter or another key fails.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "crypto.h"

using namespace tccl::crypto;

namespace {

std::vector<uint8_t> hex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

template <size_t N>
std::array<uint8_t, N> arr(const std::string& s) {
  auto v = hex(s);
  std::array<uint8_t, N> a{};
  CHECK(v.size() == N);
  std::copy(v.begin(), v.end(), a.begin());
  return a;
}

struct GcmCase {
  const char* name;
  std::string key, iv, aad, pt, ct, tag;
};

void gcmVectors() {
  const std::string zeroKey(64, '0'), zeroIv(24, '0');
  const GcmCase cases[] = {
      {"case 13", zeroKey, zeroIv, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
      {"case 14", zeroKey, zeroIv, "", std::string(32, '0'), "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
      {"case 16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
       "feedfacedeadbeeffeedfacedeadbeefabaddad2",
       "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
       "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
       "76fc6ece0f4e1768cddf8853bb2d551b"},
  };
  for (const auto& c : cases) {
    Aead aead(arr<32>(c.key));
    auto nonce = arr<12>(c.iv);
    auto aad = hex(c.aad), pt = hex(c.pt), ct = hex(c.ct), tag = hex(c.tag);
    std::vector<uint8_t> out(pt.size() + 1), gotTag(kTagBytes);
    CHECK_MSG(aead.seal(nonce, aad.data(), aad.size(), pt.data(), pt.size(), out.data(), gotTag.data()), "%s seal", c.name);
    CHECK_MSG(std::equal(ct.begin(), ct.end(), out.begin()), "%s ciphertext", c.name);
    CHECK_MSG(gotTag == tag, "%s tag", c.name);
    std::vector<uint8_t> back(pt.size() + 1);
    CHECK_MSG(aead.open(nonce, aad.data(), aad.size(), ct.data(), ct.size(), tag.data(), back.data()), "%s open", c.name);
    CHECK_MSG(std::equal(pt.begin(), pt.end(), back.begin()), "%s plaintext", c.name);
    tag[0] ^= 1;
    CHECK_MSG(!aead.open(nonce, aad.data(), aad.size(), ct.data(), ct.size(), tag.data(), back.data()), "%s: a bad tag fails", c.name);
  }
}

void x25519Vectors() {
  auto alice = arr<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  auto bob = arr<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  Key alicePub{}, bobPub{}, s1{}, s2{};
  CHECK(x25519Public(alice, alicePub));
  CHECK(x25519Public(bob, bobPub));
  CHECK(alicePub == arr<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
  CHECK(bobPub == arr<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
  CHECK(x25519(alice, bobPub, s1));
  CHECK(x25519(bob, alicePub, s2));
  CHECK(s1 == arr<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"));
  CHECK(s1 == s2);
  Key zero{};
  CHECK_MSG(!x25519(alice, zero, s1), "a low-order (all-zero) key gives no shared secret");
  Key p1{}, q1{}, p2{}, q2{};
  CHECK(x25519Keygen(p1, q1) && x25519Keygen(p2, q2));
  CHECK(p1 != p2 && q1 != q2);
  Key d1{}, d2{};
  CHECK(x25519(p1, q2, d1) && x25519(p2, q1, d2) && d1 == d2);
}

void hkdfVectors() {
  std::vector<uint8_t> ikm(22, 0x0b);
  auto salt = hex("000102030405060708090a0b0c");
  auto info = hex("f0f1f2f3f4f5f6f7f8f9");
  std::vector<uint8_t> okm(42);
  CHECK(hkdfSha256(ikm.data(), ikm.size(), salt.data(), salt.size(), info.data(), info.size(), okm.data(), okm.size()));
  CHECK(okm == hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
  CHECK(hkdfSha256(ikm.data(), ikm.size(), nullptr, 0, nullptr, 0, okm.data(), okm.size()));
  CHECK(okm == hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"));
  // RFC 4231 test case 2 for HMAC-SHA256.
  const std::string k = "Jefe", d = "what do ya want for nothing?";
  uint8_t mac[32];
  CHECK(hmacSha256(reinterpret_cast<const uint8_t*>(k.data()), k.size(), reinterpret_cast<const uint8_t*>(d.data()), d.size(), mac));
  CHECK(std::vector<uint8_t>(mac, mac + 32) == hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
}

void counterNonces() {
  Key key{};
  key[0] = 7;
  Aead tx(key), rx(key);
  std::vector<uint8_t> msg(1000, 0x5a), ct(1000), back(1000);
  uint8_t tag[kTagBytes];
  const uint8_t aad[4] = {0, 0, 3, 0xe8};
  CHECK(Aead::counterNonce(1)[11] == 1 && Aead::counterNonce(1ull << 32)[7] == 1 && Aead::counterNonce(0)[0] == 0);
  CHECK(tx.seal(Aead::counterNonce(5), aad, 4, msg.data(), msg.size(), ct.data(), tag));
  CHECK(rx.open(Aead::counterNonce(5), aad, 4, ct.data(), ct.size(), tag, back.data()) && back == msg);
  CHECK_MSG(!rx.open(Aead::counterNonce(6), aad, 4, ct.data(), ct.size(), tag, back.data()), "another counter (a replay or reorder) fails");
  ct[500] ^= 0x10;
  CHECK_MSG(!rx.open(Aead::counterNonce(5), aad, 4, ct.data(), ct.size(), tag, back.data()), "a flipped bit fails");
  ct[500] ^= 0x10;
  const uint8_t otherAad[4] = {0, 0, 3, 0xe7};
  CHECK_MSG(!rx.open(Aead::counterNonce(5), otherAad, 4, ct.data(), ct.size(), tag, back.data()), "an altered length fails");
  key[0] = 8;
  Aead other(key);
  CHECK_MSG(!other.open(Aead::counterNonce(5), aad, 4, ct.data(), ct.size(), tag, back.data()), "another key fails");
  CHECK(equal(msg.data(), msg.data(), msg.size()) && !equal(msg.data(), ct.data(), 16));
}

}  // namespace

int main() {
  std::printf("crypto backend: %s\n", backend());
  gcmVectors();
  x25519Vectors();
  hkdfVectors();
  counterNonces();
  return TEST_MAIN_RESULT();
}
