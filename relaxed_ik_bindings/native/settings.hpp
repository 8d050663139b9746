// The relaxed_ik settings YAML: which URDF, which chains, where the solver starts.
#pragma once

#include <string>
#include <vector>

namespace rik {

struct Settings {
  std::string urdf_path;                 // resolved, readable
  std::vector<std::string> base_links;   // one per chain
  std::vector<std::string> ee_links;     // same length
  std::vector<double> starting_config;   // empty: zeros (length checked by the caller)
};

// Reads the settings file. The URDF named by `urdf` is looked up, in order, as an absolute path,
// relative to the settings file's folder, and as <cwd>/configs/urdfs/<urdf> (the upstream
// convention). Throws std::runtime_error with a readable reason.
Settings load_settings(const std::string& settings_path);

// Whole file as a string; throws std::runtime_error when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace rik
