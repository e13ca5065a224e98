// A small C ABI over the SentencePiece C++ library, for t5mix: the trainer
// (`t5mix vocab train`) and the reference encoder used to check the pure-Rust
// one on freshly trained models. Built by pipeline/build.rs when pkg-config
// finds the library (Debian: libsentencepiece-dev).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {
char *dup_message(const sentencepiece::util::Status &s) {
  const std::string m = s.ToString();
  char *out = static_cast<char *>(std::malloc(m.size() + 1));
  if (out != nullptr) std::memcpy(out, m.c_str(), m.size() + 1);
  return out;
}
}  // namespace

extern "C" {

// Trains with `n` key/value flags; returns NULL on success, else an error
// message to release with t5mix_spm_free.
char *t5mix_spm_train(const char *const *keys, const char *const *values, size_t n, unsigned int seed) {
  std::unordered_map<std::string, std::string> kwargs;
  for (size_t i = 0; i < n; ++i) kwargs[keys[i]] = values[i];
  sentencepiece::SetRandomGeneratorSeed(seed);
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs);
  return status.ok() ? nullptr : dup_message(status);
}

void t5mix_spm_free(char *p) { std::free(p); }

// Loads a model for t5mix_spm_encode; NULL on failure.
void *t5mix_spm_load(const char *model) {
  auto *sp = new sentencepiece::SentencePieceProcessor();
  if (!sp->Load(model).ok()) {
    delete sp;
    return nullptr;
  }
  return sp;
}

// Encodes `len` bytes of text; writes at most `cap` ids and returns how many
// there are (-1 on error).
long t5mix_spm_encode(void *handle, const char *text, size_t len, int *out, size_t cap) {
  auto *sp = static_cast<sentencepiece::SentencePieceProcessor *>(handle);
  std::vector<int> ids;
  if (!sp->Encode(std::string(text, len), &ids).ok()) return -1;
  for (size_t i = 0; i < ids.size() && i < cap; ++i) out[i] = ids[i];
  return static_cast<long>(ids.size());
}

void t5mix_spm_unload(void *handle) { delete static_cast<sentencepiece::SentencePieceProcessor *>(handle); }
}
