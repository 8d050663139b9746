// Settings YAML parsing and URDF path resolution.
#include "settings.hpp"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace rik {
namespace {

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

bool is_regular_file(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string current_directory() {
  char buffer[4096];
  if (::getcwd(buffer, sizeof(buffer)) == nullptr) return ".";
  return buffer;
}

std::vector<std::string> read_string_list(const YAML::Node& root, const char* key) {
  const YAML::Node node = root[key];
  if (!node || !node.IsSequence()) fail(std::string("settings: '") + key + "' must be a list of link names");
  std::vector<std::string> out;
  for (const YAML::Node& item : node) {
    if (!item.IsScalar() || item.Scalar().empty()) fail(std::string("settings: '") + key + "' holds a non-name entry");
    out.push_back(item.Scalar());
  }
  return out;
}

std::string resolve_urdf(const std::string& settings_path, const std::string& urdf) {
  std::vector<std::string> candidates;
  if (!urdf.empty() && urdf.front() == '/') {
    candidates.push_back(urdf);
  } else {
    candidates.push_back(directory_of(settings_path) + "/" + urdf);
  }
  candidates.push_back(current_directory() + "/configs/urdfs/" + urdf);
  for (const std::string& candidate : candidates) {
    if (is_regular_file(candidate)) return candidate;
  }
  std::string tried;
  for (const std::string& candidate : candidates) tried += " " + candidate;
  fail("settings: URDF '" + urdf + "' not found (tried:" + tried + ")");
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) fail("cannot read '" + path + "'");
  std::ostringstream contents;
  contents << stream.rdbuf();
  if (stream.bad()) fail("cannot read '" + path + "'");
  return contents.str();
}

Settings load_settings(const std::string& settings_path) {
  if (!is_regular_file(settings_path)) fail("settings file '" + settings_path + "' does not exist");
  YAML::Node root;
  try {
    root = YAML::Load(read_text_file(settings_path));
  } catch (const YAML::Exception& error) {
    fail("settings '" + settings_path + "' is not valid YAML: " + error.what());
  }
  if (!root.IsMap()) fail("settings '" + settings_path + "' is not a YAML mapping");

  Settings settings;
  const YAML::Node urdf = root["urdf"];
  if (!urdf || !urdf.IsScalar() || urdf.Scalar().empty()) fail("settings: 'urdf' must name a URDF file");
  settings.urdf_path = resolve_urdf(settings_path, urdf.Scalar());
  settings.base_links = read_string_list(root, "base_links");
  settings.ee_links = read_string_list(root, "ee_links");
  if (settings.base_links.empty()) fail("settings: 'base_links' is empty");
  if (settings.base_links.size() != settings.ee_links.size()) {
    fail("settings: 'base_links' and 'ee_links' differ in length");
  }
  const YAML::Node start = root["starting_config"];
  if (start && !start.IsNull()) {
    if (!start.IsSequence()) fail("settings: 'starting_config' must be a list of numbers");
    for (const YAML::Node& item : start) {
      double value = 0.0;
      try {
        value = item.as<double>();
      } catch (const YAML::Exception&) {
        fail("settings: 'starting_config' holds a non-number");
      }
      if (!std::isfinite(value)) fail("settings: 'starting_config' holds a non-finite number");
      settings.starting_config.push_back(value);
    }
  }
  return settings;
}

}  // namespace rik
