// The one header generated code and most applications include: channels,
// servers, contexts, services, status and copy counters.
#pragma once

#include "zcrpc/rpc/channel.h"
#include "zcrpc/rpc/client_context.h"
#include "zcrpc/base/copy_stats.h"
#include "zcrpc/base/memory_quota.h"
#include "zcrpc/rpc/method.h"
#include "zcrpc/rpc/reactor.h"
#include "zcrpc/rpc/server.h"
#include "zcrpc/rpc/server_context.h"
#include "zcrpc/rpc/service.h"
#include "zcrpc/rpc/stream.h"
#include "zcrpc/base/status.h"
