// Score events with a jaxpr2sofie-generated model from plain C++: no Python, no ROOT.
//
// The model is the demo's JetTagger (`jaxpr2sofie demo` writes out/JetTagger.hxx and .dat).
// Each line of standard input is one event: 16 numbers. Each output line: the 5 class scores.
//
//    ./score out/JetTagger.dat < events.txt
#include "JetTagger.hxx"

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
   const std::string weights = argc > 1 ? argv[1] : "JetTagger.dat";
   try {
      TMVA_SOFIE_JetTagger::Session session(weights);   // reads the weights once
      std::vector<float> x(16);
      std::string line;
      long n = 0;
      while (std::getline(std::cin, line)) {
         std::istringstream in(line);
         for (float& v : x)
            if (!(in >> v)) {
               std::fprintf(stderr, "event %ld: expected 16 numbers\n", n);
               return 2;
            }
         const std::vector<float> scores = session.infer(x.data());
         for (std::size_t k = 0; k < scores.size(); ++k)
            std::printf(k ? " %.9g" : "%.9g", scores[k]);
         std::printf("\n");
         ++n;
      }
   } catch (const std::exception& e) {   // a missing or foreign weight file
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
   }
   return 0;
}
