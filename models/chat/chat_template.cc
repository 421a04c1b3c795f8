#include "models/chat/chat_template.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/files.h"
#include "models/json_parse.h"

namespace kvfold {

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source,
                                                 std::string_view name) {
  auto t = jinja::Template::Parse(source, name);
  if (!t.ok()) return t.status();
  return ChatTemplate(std::move(*t));
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const std::vector<ChatMessage>& messages, bool add_generation_prompt,
    const std::map<std::string, std::string>& variables) const {
  jinja::List msgs;
  msgs.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    msgs.emplace_back(jinja::Dict{{"role", jinja::Value(m.role)},
                                  {"content", jinja::Value(m.content)}});
  }
  // The order of transformers' render(messages=..., tools=..., documents=...,
  // add_generation_prompt=..., **special_tokens_and_kwargs).
  jinja::Dict root = {
      {"messages", jinja::Value(std::move(msgs))},
      {"tools", jinja::Value::None()},
      {"documents", jinja::Value::None()},
      {"add_generation_prompt", jinja::Value(add_generation_prompt)},
  };
  for (const auto& [k, v] : variables) {
    bool replaced = false;
    for (auto& [k2, v2] : root) {
      if (k2 == k) {
        v2 = jinja::Value(v);
        replaced = true;
      }
    }
    if (!replaced) root.emplace_back(k, jinja::Value(v));
  }
  jinja::RenderOptions options;
  if (now_) {
    options.strftime_now = [this](const std::string& format) {
      std::time_t t = now_();
      std::tm tm;
      if (utc_) {
        gmtime_r(&t, &tm);
      } else {
        localtime_r(&t, &tm);
      }
      char buf[512];
      size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &tm);
      return std::string(buf, n);
    };
  }
  return template_.Render(root, options);
}

absl::StatusOr<LoadedChatTemplate> LoadChatTemplate(
    const std::string& tokenizer_config_path) {
  auto text = ReadTextFile(tokenizer_config_path, size_t{64} << 20);
  if (!text.ok()) return text.status();
  KVFOLD_ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonLimited(*text, tokenizer_config_path));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_config_path, ": not a JSON object"));
  }
  std::string source;
  std::string name = tokenizer_config_path + ": chat_template";
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) {
    return absl::NotFoundError(
        absl::StrCat(tokenizer_config_path, ": no chat_template"));
  }
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    bool found = false;
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" &&
          entry.contains("template") && entry["template"].is_string()) {
        source = entry["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) {
      return absl::NotFoundError(absl::StrCat(
          tokenizer_config_path, ": chat_template list has no \"default\""));
    }
    name += "[default]";
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer_config_path, ": chat_template must be a string or a list"));
  }
  auto tmpl = ChatTemplate::Parse(source, name);
  if (!tmpl.ok()) return tmpl.status();
  LoadedChatTemplate out{std::move(*tmpl), {}};
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token",
                          "sep_token", "cls_token", "mask_token"}) {
    auto t = j.find(key);
    if (t == j.end()) continue;
    if (t->is_string()) {
      out.special_tokens[key] = t->get<std::string>();
    } else if (t->is_object() && t->contains("content") &&
               (*t)["content"].is_string()) {
      out.special_tokens[key] = (*t)["content"].get<std::string>();
    }
  }
  return out;
}

}  // namespace kvfold
