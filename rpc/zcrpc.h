// The one header generated code and most applications include: channels,
// servers, contexts, services and status.
#pragma once

#include "rpc/channel.h"
#include "rpc/client_context.h"
#include "rpc/method.h"
#include "rpc/server.h"
#include "rpc/server_context.h"
#include "rpc/service.h"
#include "rpc/status.h"
