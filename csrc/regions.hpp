#pragma once
// (filled in by the regions kernel work)
namespace samrt {}
