"""The C++ side of the weight files (weights.py): helpers every header with weights carries.

TEXT_READER reads SOFIE's text format in blocks of 1 MiB and parses each value with
std::from_chars (correctly rounded, locale-independent: float32 values written with 9 digits come
back bit for bit) where the standard library has it for floats, else strtof/strtod; no `>>` per
value, which is what made a text file load at a few million values a second. Memory: the block,
not the file. BINARY_READER reads the binary format straight into the tensors.
"""

TEXT_READER = r"""
// Reads SOFIE's text weight format (see jaxpr2sofie/cpp/weights.py) block by block and checks it.
class TextReader {
public:
   TextReader(std::istream& f, const std::string& file, const std::string& model)
      : f_(f), where_("TMVA_SOFIE_" + model + ": weight file '" + file + "'"), buf_(1 << 20) {}
   template <typename T>
   void tensor(const char* name, T* data, std::size_t n) {
      const std::string want = "tensor_" + std::string(name);
      const std::string tag(token());
      if (tag.empty())
         fail(" is truncated: " + want + " is missing");
      if (tag != want)
         fail(" holds '" + tag + "' where '" + want + "' was expected: is it the weight file of another model?");
      const std::string_view count = token();
      unsigned long long len = 0;
      const auto r = std::from_chars(count.data(), count.data() + count.size(), len);
      if (count.empty() || r.ec != std::errc() || r.ptr != count.data() + count.size())
         fail(" is truncated or damaged after " + want + ": '" + std::string(count) + "' is not a length");
      if (len != n)
         fail(": " + want + " has " + std::to_string(len) + " values, the model needs " + std::to_string(n) +
              ": is it the weight file of another model?");
      for (std::size_t i = 0; i < n; ++i) {
         if (next_float32(data[i]))
            continue;
         const std::string_view tok = token();
         if (tok.empty())
            fail(" is truncated inside " + want + " (" + std::to_string(i) + " of " + std::to_string(n) +
                 " values)");
         if (!parse(tok, data[i]))
            fail(": '" + std::string(tok) + "' in " + want + " is not a number");
      }
   }
   void finish() {
      const std::string_view tok = token();
      if (!tok.empty())
         fail(" has data after the last tensor ('" + std::string(tok.substr(0, 40)) +
              "'): is it the weight file of another model?");
   }

private:
   static bool space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }   // as std::isspace, "C" locale
   // The next whitespace-separated token (empty at the end of the data); valid until the next call.
   std::string_view token() {
      for (;;) {
         while (pos_ < end_ && space(buf_[pos_]))
            ++pos_;
         if (pos_ < end_)
            break;
         if (eof_)
            return {};
         pos_ = end_ = 0;
         more();
      }
      std::size_t stop = pos_;
      for (;;) {
         while (stop < end_ && !space(buf_[stop]))
            ++stop;
         if (stop < end_ || eof_)
            break;
         // the token runs on past the block: move it to the front and read on
         if (pos_ == 0)
            fail(" holds a token longer than " + std::to_string(buf_.size()) + " characters: is it a weight file?");
         std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
         stop -= pos_;
         end_ -= pos_;
         pos_ = 0;
         more();
      }
      const std::string_view tok(buf_.data() + pos_, stop - pos_);
      pos_ = stop;
      return tok;
   }
   void more() {
      f_.read(buf_.data() + end_, static_cast<std::streamsize>(buf_.size() - end_));
      const std::size_t got = static_cast<std::size_t>(f_.gcount());
      eof_ = end_ + got < buf_.size();   // a short read: the stream has ended
      end_ += got;
   }
   // A float read straight from the block, with no separate pass to find the token's end, when it
   // is one the fast path takes and not near the block's end; else false, and nothing is consumed.
   template <typename T>
   bool next_float32(T& out) {
      if constexpr (std::is_same<T, float>::value) {
         while (pos_ < end_ && space(buf_[pos_]))
            ++pos_;
         if (end_ - pos_ < 64)
            return false;
         const char* p = buf_.data() + pos_;
         const char* stop = fast_float32(p, p + 64, out);
         if (!stop || !space(*stop))
            return false;
         pos_ += static_cast<std::size_t>(stop - p);
         return true;
      } else {
         (void)out;
         return false;
      }
   }
   template <typename T>
   static bool parse(std::string_view s, T& out) {
      const char* b = s.data();
      const char* e = b + s.size();
      if constexpr (std::is_floating_point<T>::value) {
         if (sizeof(T) == sizeof(float) && fast_float32(b, e, out) == e)
            return true;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
         const auto r = std::from_chars(b, e, out);
         return r.ec == std::errc() && r.ptr == e;
#else
         char tmp[64];   // strtof needs a terminated string; a longer token is no number of ours
         if (s.size() >= sizeof tmp)
            return false;
         std::memcpy(tmp, b, s.size());
         tmp[s.size()] = '\0';
         char* end = nullptr;
         out = sizeof(T) == sizeof(float) ? std::strtof(tmp, &end) : static_cast<T>(std::strtod(tmp, &end));
         return end == tmp + s.size();
#endif
      } else {
         long long v = 0;   // integers and bool: every type a tensor has fits
         const auto r = std::from_chars(b, e, v);
         out = static_cast<T>(v);
         return r.ec == std::errc() && r.ptr == e;
      }
   }
   // Clinger's fast path, for the numbers a writer of this format produces (up to 15 digits, a decimal
   // exponent within +-22): digits and 10^|exponent| are exact doubles, so one multiplication or
   // division gives the double nearest the decimal, and that double rounds to the float nearest the
   // decimal unless it lies within one double ulp of a midpoint between two floats (checked on its
   // low 29 bits) or outside the floats' normal range. Those and anything else go to the full parser.
   // Returns where the number ends (the caller checks what follows), nullptr if it is not taken.
   template <typename T>
   static const char* fast_float32(const char* p, const char* e, T& out) {
      static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
      const bool negative = p < e && *p == '-';
      p += negative;
      std::uint64_t digits = 0;
      int count = 0, scale = 0;
      for (; p < e && static_cast<unsigned>(*p - '0') < 10; ++p, ++count)
         digits = digits * 10 + static_cast<unsigned>(*p - '0');
      if (p < e && *p == '.')
         for (++p; p < e && static_cast<unsigned>(*p - '0') < 10; ++p, ++count, --scale)
            digits = digits * 10 + static_cast<unsigned>(*p - '0');
      if (count == 0 || count > 15)
         return nullptr;
      if (p < e && (*p == 'e' || *p == 'E')) {
         ++p;
         const bool down = p < e && *p == '-';
         p += p < e && (*p == '-' || *p == '+');
         int x = 0;
         const char* first = p;
         for (; p < e && p - first < 3 && static_cast<unsigned>(*p - '0') < 10; ++p)
            x = x * 10 + (*p - '0');
         if (p == first)
            return nullptr;
         scale += down ? -x : x;
      }
      if (scale < -22 || scale > 22)
         return nullptr;
      double d = static_cast<double>(digits);
      d = scale < 0 ? d / pow10[-scale] : d * pow10[scale];
      if (d != 0 && (d < std::numeric_limits<float>::min() || d > std::numeric_limits<float>::max()))
         return nullptr;
      std::uint64_t bits = 0;
      std::memcpy(&bits, &d, sizeof d);
      const std::uint64_t low = bits & 0x1FFFFFFFu;   // a float midpoint's low 29 bits: 0x10000000
      if (low + 1 >= 0x10000000u && low <= 0x10000001u)
         return nullptr;
      out = static_cast<T>(negative ? -d : d);
      return p;
   }
   [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(where_ + what); }
   std::istream& f_;
   std::string where_;
   std::vector<char> buf_;
   std::size_t pos_ = 0, end_ = 0;
   bool eof_ = false;
};
"""

BINARY_READER = """\
// Reads the binary weight format (see jaxpr2sofie/cpp/weights.py) and checks it as it goes.
class BinaryReader {
public:
   BinaryReader(std::istream& f, const std::string& file, const std::string& model, std::uint64_t table,
                std::uint64_t count)
      : f_(f), where_("TMVA_SOFIE_" + model + ": weight file '" + file + "'") {
      const std::uint16_t one = 1;
      if (*reinterpret_cast<const unsigned char*>(&one) != 1)
         fail(": binary weight files are little-endian and this machine is not; use the text format");
      char magic[4];
      std::uint32_t version = 0, len = 0;
      if (!read(magic, 4) || std::memcmp(magic, "J2SW", 4) != 0)
         fail(" is not a jaxpr2sofie weight file");
      if (!read(&version, 4) || version != 1)
         fail(" has format version " + std::to_string(version) + "; this header reads version 1");
      if (!read(&len, 4) || len > 4096)
         fail(" is truncated in its header");
      std::string name(len, '\\0');
      if (!read(&name[0], len))
         fail(" is truncated in its header");
      if (name != model)
         fail(" belongs to model '" + name + "', not " + model);
      std::uint64_t t = 0, n = 0;
      if (!read(&t, 8) || !read(&n, 8))
         fail(" is truncated in its header");
      if (t != table || n != count)
         fail(" lists other tensors than this model has: is it from another version of the model?");
   }
   template <typename T>
   void tensor(const char* name, T* data, std::size_t n) {
      if (!read(data, n * sizeof(T)))
         fail(" is truncated inside tensor_" + std::string(name));
      std::uint64_t want = 0;
      if (!read(&want, 8))
         fail(" is truncated after tensor_" + std::string(name));
      if (checksum(data, n * sizeof(T), position_++) != want)
         fail(": tensor_" + std::string(name) + " is corrupted or out of place (checksum mismatch)");
   }
   void finish() {
      if (f_.peek() != std::char_traits<char>::eof())
         fail(" has data after the last tensor: is it the weight file of another model?");
   }

private:
   bool read(void* p, std::size_t n) {
      f_.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
      return static_cast<std::size_t>(f_.gcount()) == n;
   }
   [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(where_ + what); }
   static std::uint64_t checksum(const void* p, std::size_t bytes, std::uint64_t position) {
      const unsigned char* b = static_cast<const unsigned char*>(p);
      std::uint64_t h = 0;
      for (std::size_t i = 0; i * 8 < bytes; ++i) {
         std::uint64_t w = 0;
         std::memcpy(&w, b + i * 8, std::min<std::size_t>(8, bytes - i * 8));
         h += w * (2 * static_cast<std::uint64_t>(i) + 1);
      }
      return h + (position + 1) * 0x9E3779B97F4A7C15ull;
   }
   std::istream& f_;
   std::string where_;
   std::uint64_t position_ = 0;
};
"""
