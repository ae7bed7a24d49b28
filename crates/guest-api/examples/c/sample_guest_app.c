/*
 * A sample application for the guest heartbeat API.
 *
 * Usage: sample_guest_app NAME [TRIGGER_DIR [INTERVAL_MS [ACTION]]]
 *   TRIGGER_DIR  where trigger files are looked for (default /tmp)
 *   INTERVAL_MS  heartbeat interval (default 1000)
 *   ACTION       corrective action: reboot (default), stop, log or none
 *
 * Trigger files, looked at on every health check or action:
 *   NAME_unhealthy             report unhealthy while it exists (its first line is the reason)
 *   NAME_vote_no_to_EVENT      vote no to EVENT (stop, reboot, suspend, pause, resize,
 *                              migrate) when it is put to a vote
 *   NAME_event_timeout         do not answer actions at all
 *   NAME_deregister            deregister, then exit with status 0
 *
 * The socket is /var/run/.guest_heartbeat_api unless GUEST_HEARTBEAT_API_SOCKET says
 * otherwise. Progress lines go to stdout.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest_heartbeat_api.h"

static const char *name = "sample-app";
static const char *trigger_dir = "/tmp";
static int interval_ms = 1000;
static GuestHeartbeatApiActionT action = GUEST_HEARTBEAT_API_ACTION_REBOOT;
static bool registered = false;
static bool registering = false;

static void trigger_path(char *out, size_t size, const char *what)
{
    snprintf(out, size, "%s/%s_%s", trigger_dir, name, what);
}

static bool triggered(const char *what)
{
    char path[512];
    trigger_path(path, sizeof(path), what);
    return access(path, F_OK) == 0;
}

static void register_state(bool state)
{
    printf("register_state %s\n", state ? "true" : "false");
    fflush(stdout);
    registered = state;
    registering = false;
}

static void health_check(bool *health, GuestHeartbeatApiActionT *corrective_action,
                         char log_msg[])
{
    char path[512];
    FILE *f;

    *health = true;
    *corrective_action = GUEST_HEARTBEAT_API_ACTION_NONE;
    log_msg[0] = '\0';
    trigger_path(path, sizeof(path), "unhealthy");
    f = fopen(path, "r");
    if (f == NULL)
        return;
    *health = false;
    *corrective_action = action;
    if (fgets(log_msg, GUEST_HEARTBEAT_API_LOG_MAX, f) == NULL)
        snprintf(log_msg, GUEST_HEARTBEAT_API_LOG_MAX, "%s is unhealthy", name);
    log_msg[strcspn(log_msg, "\n")] = '\0';
    fclose(f);
}

static const char *vote_topic(GuestHeartbeatApiEventT event)
{
    switch (event) {
    case GUEST_HEARTBEAT_API_EVENT_STOP: return "vote_no_to_stop";
    case GUEST_HEARTBEAT_API_EVENT_REBOOT: return "vote_no_to_reboot";
    case GUEST_HEARTBEAT_API_EVENT_SUSPEND: return "vote_no_to_suspend";
    case GUEST_HEARTBEAT_API_EVENT_PAUSE: return "vote_no_to_pause";
    case GUEST_HEARTBEAT_API_EVENT_RESIZE_BEGIN: return "vote_no_to_resize";
    case GUEST_HEARTBEAT_API_EVENT_LIVE_MIGRATE_BEGIN:
    case GUEST_HEARTBEAT_API_EVENT_COLD_MIGRATE_BEGIN: return "vote_no_to_migrate";
    default: return NULL;
    }
}

static void action_notify(int invocation_id, GuestHeartbeatApiEventT event,
                          GuestHeartbeatApiNotifyTypeT notify_type)
{
    const char *topic = vote_topic(event);
    GuestHeartbeatApiVoteResultT vote = GUEST_HEARTBEAT_API_VOTE_RESULT_ACCEPT;
    char reason[GUEST_HEARTBEAT_API_LOG_MAX] = "";

    printf("action_notify %s %s\n", guest_heartbeat_api_event_str(event),
           guest_heartbeat_api_notify_str(notify_type));
    fflush(stdout);
    if (triggered("event_timeout"))
        return;
    if (notify_type == GUEST_HEARTBEAT_API_NOTIFY_TYPE_IRREVOCABLE) {
        vote = GUEST_HEARTBEAT_API_VOTE_RESULT_COMPLETE;
    } else if (topic != NULL && triggered(topic)) {
        vote = GUEST_HEARTBEAT_API_VOTE_RESULT_REJECT;
        snprintf(reason, sizeof(reason), "%s votes no to %s", name,
                 guest_heartbeat_api_event_str(event));
    }
    guest_heartbeat_api_send_action_response(invocation_id, event, notify_type, vote, reason);
}

static GuestHeartbeatApiActionT parse_action(const char *text)
{
    if (strcmp(text, "stop") == 0) return GUEST_HEARTBEAT_API_ACTION_STOP;
    if (strcmp(text, "log") == 0) return GUEST_HEARTBEAT_API_ACTION_LOG;
    if (strcmp(text, "none") == 0) return GUEST_HEARTBEAT_API_ACTION_NONE;
    return GUEST_HEARTBEAT_API_ACTION_REBOOT;
}

static int try_register(void)
{
    GuestHeartbeatApiInitDataT init;
    GuestApiErrorT error;

    memset(&init, 0, sizeof(init));
    snprintf(init.application_name, sizeof(init.application_name), "%s", name);
    init.heartbeat_interval_ms = interval_ms;
    init.vote_secs = 8;
    init.shutdown_notice_secs = 5;
    init.suspend_notice_secs = 5;
    init.resume_notice_secs = 5;
    init.corrective_action = action;
    error = guest_heartbeat_api_register(&init);
    if (error == GUEST_API_OKAY) {
        registering = true;
        return 0;
    }
    return error == GUEST_API_TRY_AGAIN ? 0 : -1;
}

int main(int argc, char *argv[])
{
    GuestHeartbeatApiCallbacksT callbacks;

    if (argc > 1) name = argv[1];
    if (argc > 2) trigger_dir = argv[2];
    if (argc > 3) interval_ms = atoi(argv[3]);
    if (argc > 4) action = parse_action(argv[4]);

    memset(&callbacks, 0, sizeof(callbacks));
    callbacks.register_state = register_state;
    callbacks.health_check = health_check;
    callbacks.action_notify = action_notify;
    if (guest_heartbeat_api_initialize(&callbacks) != GUEST_API_OKAY) {
        fprintf(stderr, "cannot initialize the guest heartbeat API\n");
        return EXIT_FAILURE;
    }
    for (;;) {
        struct pollfd fds[1];
        int fd;

        if (triggered("deregister")) {
            guest_heartbeat_api_deregister("deregistered on request");
            printf("deregistered\n");
            fflush(stdout);
            guest_heartbeat_api_finalize();
            return EXIT_SUCCESS;
        }
        if (!registered && !registering && try_register() != 0) {
            fprintf(stderr, "cannot register\n");
            return EXIT_FAILURE;
        }
        fd = guest_heartbeat_api_get_selobj();
        if (fd < 0) {
            /* Not connected (the daemon is away, or a write failed): register again. */
            registered = false;
            registering = false;
            usleep(100 * 1000);
            continue;
        }
        fds[0].fd = fd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        if (poll(fds, 1, 100) > 0)
            guest_heartbeat_api_dispatch(fd);
    }
}
