"""What every PJSIP (pjsua2) peer of the test suite starts with: one endpoint, single-threaded
(events handled by the script's own loop), logging every SIP message on stdout."""
import pjsua2 as pj


def endpoint(level=5, user_agent=None, stun_server=None):
    """A created and initialised endpoint; the caller adds transports and starts it."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = level
    cfg.logConfig.consoleLevel = level
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    if user_agent is not None:
        # pjsua2 sends no User-Agent unless told; "{version}" stands for PJSIP's version.
        cfg.uaConfig.userAgent = user_agent.format(version=ep.libVersion().full)
    if stun_server is not None:
        cfg.uaConfig.stunServer.append(stun_server)
    ep.libInit(cfg)
    return ep
