// The one header generated code and most applications include: channels,
// servers, contexts, services, status and copy counters.
#pragma once

#include "rpc/channel.h"
#include "rpc/client_context.h"
#include "rpc/copy_stats.h"
#include "rpc/method.h"
#include "rpc/server.h"
#include "rpc/server_context.h"
#include "rpc/service.h"
#include "rpc/status.h"
