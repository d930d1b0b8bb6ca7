// ROOT macro: score events with a jaxpr2sofie-generated header, interpreted by cling.
//
//    root -b -q 'examples/cpp/score_events.C("out/JetTagger.hxx", "out/JetTagger.dat")'
//
// The JetTagger's products are small enough to run without BLAS; a header that calls BLAS needs
// its library loaded first (gSystem->Load) and J2S_SGEMM defined before the #include.
#include <cstdio>
#include <string>
#include <vector>

void score_events(const char* header = "out/JetTagger.hxx", const char* weights = "out/JetTagger.dat") {
   if (!gInterpreter->Declare(("#include \"" + std::string(header) + "\"").c_str())) {
      std::printf("cannot declare %s\n", header);
      return;
   }
   // the namespace exists only once the header is declared: reach it through the interpreter
   gInterpreter->ProcessLine(Form(
      "{ TMVA_SOFIE_JetTagger::Session s(\"%s\");"
      "  for (int e = 0; e < 3; ++e) {"
      "     std::vector<float> x(16);"
      "     for (int k = 0; k < 16; ++k) x[k] = 0.1f * (k - 8) + 0.5f * e;"
      "     std::vector<float> y = s.infer(x.data());"
      "     printf(\"event %%d:\", e);"
      "     for (float v : y) printf(\" %%.9g\", v);"
      "     printf(\"\\n\");"
      "  } }", weights));
}
