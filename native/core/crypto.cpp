// crypto.h over OpenSSL 3's EVP API (see crypto.h for which OpenSSL each build uses).
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/opensslv.h>

#include <stdexcept>

namespace tccl::crypto {

namespace {

EVP_CIPHER_CTX* keyed(const Key& key, bool encrypt) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (!ctx) throw std::runtime_error("EVP_CIPHER_CTX_new failed");
  if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr, encrypt ? 1 : 0) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    throw std::runtime_error("AES-256-GCM is not available in this OpenSSL");
  }
  return ctx;
}

bool fits(size_t n) { return n <= static_cast<size_t>(INT32_MAX); }

struct Pkey {
  EVP_PKEY* p = nullptr;
  ~Pkey() { EVP_PKEY_free(p); }
};
struct PkeyCtx {
  EVP_PKEY_CTX* p = nullptr;
  ~PkeyCtx() { EVP_PKEY_CTX_free(p); }
};

}  // namespace

const char* backend() { return OpenSSL_version(OPENSSL_VERSION); }

Aead::Aead(const Key& key) : key_(key) {}

Aead::~Aead() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(enc_));
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(dec_));
  wipe(key_.data(), key_.size());
}

Nonce Aead::counterNonce(uint64_t counter) {
  Nonce n{};
  for (int i = 0; i < 8; ++i) n[4 + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
  return n;
}

bool Aead::seal(const Nonce& nonce, const uint8_t* aad, size_t aadLen, const uint8_t* in, size_t n, uint8_t* out, uint8_t* tag) {
  if (!fits(n) || !fits(aadLen)) return false;
  if (!enc_) enc_ = keyed(key_, true);
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(enc_);
  int len = 0;
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1) return false;
  if (aadLen && EVP_EncryptUpdate(ctx, nullptr, &len, aad, static_cast<int>(aadLen)) != 1) return false;
  if (n && EVP_EncryptUpdate(ctx, out, &len, in, static_cast<int>(n)) != 1) return false;
  if (EVP_EncryptFinal_ex(ctx, out + (n ? len : 0), &len) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes), tag) == 1;
}

bool Aead::open(const Nonce& nonce, const uint8_t* aad, size_t aadLen, const uint8_t* in, size_t n, const uint8_t* tag, uint8_t* out) {
  if (!fits(n) || !fits(aadLen)) return false;
  if (!dec_) dec_ = keyed(key_, false);
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(dec_);
  int len = 0;
  if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1) return false;
  if (aadLen && EVP_DecryptUpdate(ctx, nullptr, &len, aad, static_cast<int>(aadLen)) != 1) return false;
  if (n && EVP_DecryptUpdate(ctx, out, &len, in, static_cast<int>(n)) != 1) return false;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), const_cast<uint8_t*>(tag)) != 1) return false;
  return EVP_DecryptFinal_ex(ctx, out + (n ? len : 0), &len) == 1;
}

bool x25519Keygen(Key& priv, Key& pub) {
  PkeyCtx ctx{EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr)};
  Pkey key;
  if (!ctx.p || EVP_PKEY_keygen_init(ctx.p) != 1 || EVP_PKEY_keygen(ctx.p, &key.p) != 1) return false;
  size_t a = priv.size(), b = pub.size();
  return EVP_PKEY_get_raw_private_key(key.p, priv.data(), &a) == 1 && EVP_PKEY_get_raw_public_key(key.p, pub.data(), &b) == 1 &&
         a == kKeyBytes && b == kKeyBytes;
}

bool x25519Public(const Key& priv, Key& pub) {
  Pkey key{EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv.data(), priv.size())};
  size_t n = pub.size();
  return key.p && EVP_PKEY_get_raw_public_key(key.p, pub.data(), &n) == 1 && n == kKeyBytes;
}

bool x25519(const Key& priv, const Key& peerPub, Key& shared) {
  Pkey mine{EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv.data(), priv.size())};
  Pkey theirs{EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peerPub.data(), peerPub.size())};
  if (!mine.p || !theirs.p) return false;
  PkeyCtx ctx{EVP_PKEY_CTX_new(mine.p, nullptr)};
  size_t n = shared.size();
  // OpenSSL refuses an all-zero result (a low-order peer key) in EVP_PKEY_derive.
  if (!ctx.p || EVP_PKEY_derive_init(ctx.p) != 1 || EVP_PKEY_derive_set_peer(ctx.p, theirs.p) != 1) return false;
  if (EVP_PKEY_derive(ctx.p, shared.data(), &n) != 1 || n != kKeyBytes) return false;
  uint8_t any = 0;
  for (uint8_t b : shared) any |= b;
  return any != 0;
}

bool hkdfSha256(const uint8_t* ikm, size_t ikmLen, const uint8_t* salt, size_t saltLen, const uint8_t* info, size_t infoLen, uint8_t* out,
                size_t outLen) {
  if (outLen == 0 || outLen > 255 * 32 || !fits(ikmLen) || !fits(saltLen) || !fits(infoLen)) return false;
  PkeyCtx ctx{EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr)};
  if (!ctx.p || EVP_PKEY_derive_init(ctx.p) != 1 || EVP_PKEY_CTX_set_hkdf_md(ctx.p, EVP_sha256()) != 1) return false;
  // An empty salt is HKDF's default (32 zero bytes), which OpenSSL uses when none is set.
  if (saltLen && EVP_PKEY_CTX_set1_hkdf_salt(ctx.p, salt, static_cast<int>(saltLen)) != 1) return false;
  if (EVP_PKEY_CTX_set1_hkdf_key(ctx.p, ikm, static_cast<int>(ikmLen)) != 1) return false;
  if (infoLen && EVP_PKEY_CTX_add1_hkdf_info(ctx.p, info, static_cast<int>(infoLen)) != 1) return false;
  size_t n = outLen;
  return EVP_PKEY_derive(ctx.p, out, &n) == 1 && n == outLen;
}

bool hmacSha256(const uint8_t* key, size_t keyLen, const uint8_t* data, size_t n, uint8_t out[32]) {
  unsigned int len = 0;
  if (!fits(keyLen)) return false;
  return HMAC(EVP_sha256(), key, static_cast<int>(keyLen), data, n, out, &len) != nullptr && len == 32;
}

bool equal(const uint8_t* a, const uint8_t* b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

void wipe(void* p, size_t n) { OPENSSL_cleanse(p, n); }

}  // namespace tccl::crypto
